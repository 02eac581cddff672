//! A global allocator that refuses any single allocation above [`ALLOC_CAP`]: the input being
//! run (registered with [`set_input`]) is written to the crash file opened with
//! [`set_crash_file`], then the process aborts. (A global allocator must not unwind, so the
//! failure is an abort with the input kept, not a panic.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The largest single allocation a loader may make while fuzzed: 256 MiB. Inputs are at most
/// [`crate::run::MAX_INPUT`] (4 MiB); legitimate expansion (dequantised weights, metadata
/// values) stays far below.
pub const ALLOC_CAP: usize = 256 << 20;

static INPUT_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static INPUT_LEN: AtomicUsize = AtomicUsize::new(0);
static CRASH_FILE: OnceLock<(File, String)> = OnceLock::new();

static TARGET: AtomicPtr<&'static str> = AtomicPtr::new(std::ptr::null_mut());

/// Names the target being fuzzed (shown when an input aborts the process).
pub fn set_target(name: &'static str) {
    let boxed: &'static mut &'static str = Box::leak(Box::new(name));
    TARGET.store(boxed, Ordering::SeqCst);
}

/// Registers the input about to run (it must live until the next call).
pub fn set_input(data: &[u8]) {
    INPUT_LEN.store(0, Ordering::SeqCst);
    INPUT_PTR.store(data.as_ptr() as *mut u8, Ordering::SeqCst);
    INPUT_LEN.store(data.len(), Ordering::SeqCst);
}

/// Where an input that breaks the cap or hangs is written (opened once, before fuzzing).
pub fn set_crash_file(path: &std::path::Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = File::create(path)?;
    let _ = CRASH_FILE.set((f, path.display().to_string()));
    Ok(())
}

/// Writes the current input to the crash file and aborts, after `why` on stderr. Allocates
/// nothing (it runs inside the allocator).
pub fn save_input_and_abort(why: &[u8]) -> ! {
    let mut err = std::io::stderr();
    let _ = err.write_all(why);
    let target = TARGET.load(Ordering::SeqCst);
    if !target.is_null() {
        let _ = err.write_all(b" (target ");
        // SAFETY: set by set_target from a leaked &'static str.
        let _ = err.write_all(unsafe { *target }.as_bytes());
        let _ = err.write_all(b")");
    }
    if let Some((mut f, path)) = CRASH_FILE.get().map(|(f, p)| (f, p)) {
        let len = INPUT_LEN.load(Ordering::SeqCst);
        let ptr = INPUT_PTR.load(Ordering::SeqCst);
        if !ptr.is_null() {
            // SAFETY: set_input's caller keeps the input alive while it runs.
            let input = unsafe { std::slice::from_raw_parts(ptr, len) };
            let _ = f.write_all(input);
            let _ = f.sync_all();
            let _ = err.write_all(b"; the input is saved in ");
            let _ = err.write_all(path.as_bytes());
        }
    }
    let _ = err.write_all(b"\n");
    std::process::abort()
}

/// The system allocator with a cap on each allocation.
pub struct CappedAlloc;

// SAFETY: every call is forwarded to `System` unchanged, or aborts.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            save_input_and_abort(b"fuzz: a single allocation exceeded the 256 MiB cap");
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            save_input_and_abort(b"fuzz: a single allocation exceeded the 256 MiB cap");
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_CAP {
            save_input_and_abort(b"fuzz: a single allocation exceeded the 256 MiB cap");
        }
        System.realloc(ptr, layout, new_size)
    }
}
