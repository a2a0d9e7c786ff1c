//! Transparent huge pages for the manager's large random-access arrays.
//!
//! From 10^5 blocks up the index (64 bytes a block) and the per-block arrays span thousands of
//! 4 KiB pages, so a random probe misses the TLB as well as the cache, and the page walk comes
//! on top of the line fill. Linux backs a region with 2 MiB pages only where the program asks
//! (`transparent_hugepage=madvise` is the usual setting), so the manager asks for its arrays,
//! before it first touches them.

const HUGE_PAGE: usize = 2 << 20;

/// Ask for huge pages for the whole 2 MiB pages inside `[addr, addr + len)`; the parts at
/// either end that share a huge page with other memory are left alone. Advice only: it never
/// fails in a way that matters (an old kernel, or another OS, just keeps small pages).
pub(crate) fn advise(addr: usize, len: usize) {
    let start = addr.next_multiple_of(HUGE_PAGE);
    let end = addr.saturating_add(len) & !(HUGE_PAGE - 1);
    if end <= start {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: MADV_HUGEPAGE changes neither the contents nor the access rights of any page,
    // whatever the range holds; a range that is not mapped is refused with an error, which is
    // ignored (the pages stay small).
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
    }
}

/// `advise` for a vector's buffer.
pub(crate) fn advise_vec<T>(v: &Vec<T>) {
    advise(v.as_ptr() as usize, v.capacity() * std::mem::size_of::<T>());
}
