//! How the C allocator should treat a forward's buffers.
//!
//! A forward allocates and frees, layer after layer, buffers of one to a few
//! dozen MiB: activations, each layer's attention probabilities, the outputs
//! of matrix products. glibc's defaults hand every such buffer back to the
//! kernel when it is freed (it is either `mmap`ed, or freed at the top of the
//! heap and trimmed), so the next layer faults the same amount of fresh
//! zeroed pages in again. Measured on MiniLM-L6 at 512 tokens on one thread,
//! that page traffic was about a sixth of the forward (`perf`: page faults,
//! `clear_page`, the page allocator's locks).
//!
//! [`keep_freed_buffers_for_reuse`] keeps buffers up to 32 MiB on the heap
//! and lets up to 1 GiB of freed heap stay mapped, so that later layers reuse
//! the pages. Both settings are needed: either one alone fixes glibc's
//! adaptive threshold at its 128 KiB default for the other, which made the
//! forward slower than the defaults (measured). Peak memory does not grow,
//! since a freed page is reused rather than added; what changes is that
//! memory freed after the peak is returned later, when the heap is trimmed
//! below 1 GiB of free space or the process ends.

/// Sets the heap policy above for this process, unless the user chose one
/// through `GLIBC_TUNABLES` (their `glibc.malloc.*` settings stay in force).
/// Does nothing on platforms whose C library is not glibc.
///
/// Call it at the start of `main`, before threads allocate: it is a process
/// policy, which is why the library never sets it by itself.
pub fn keep_freed_buffers_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_chose = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."));
        if !user_chose {
            // SAFETY: mallopt only sets allocator parameters; it is called
            // with parameters and values glibc documents.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            }
        }
    }
}
