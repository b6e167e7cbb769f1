//! A global allocator for fuzz targets that aborts on any single allocation
//! larger than a bound tied to the input (`BASE + PER_INPUT_BYTE * len`).
//!
//! `cargo fuzz run -s none` (the stable toolchain) turns off libFuzzer's own
//! malloc limit, so without this a decoder that reserves what a length field
//! claims would pass the fuzz smoke run. The bound is enforced only while a
//! target body runs (libFuzzer's own bookkeeping between inputs is not ours
//! to judge). An abort is a crash to libFuzzer: it writes the input to
//! artifacts/, and scripts/fuzz-smoke fails.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Fixed allowance: decoders' own fixed buffers (read chunks, scratch) fit.
const BASE: usize = 1 << 20;
/// Per byte of input: a decoded structure may be a few times its encoding.
const PER_INPUT_BYTE: usize = 64;

static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

pub struct Guarded;

#[global_allocator]
static ALLOC: Guarded = Guarded;

fn check(size: usize) {
    let limit = LIMIT.load(Ordering::Relaxed);
    if size > limit {
        // No formatting machinery that could allocate: write fixed text and
        // the two numbers by hand, then abort (libFuzzer reports a crash).
        let mut line = [0u8; 128];
        let mut n = 0;
        for part in [&b"fuzz alloc guard: one allocation of "[..]] {
            line[n..n + part.len()].copy_from_slice(part);
            n += part.len();
        }
        n += write_num(&mut line[n..], size);
        let mid = b" bytes over the input's bound of ";
        line[n..n + mid.len()].copy_from_slice(mid);
        n += mid.len();
        n += write_num(&mut line[n..], limit);
        line[n] = b'\n';
        let _ = std::io::stderr().write_all(&line[..n + 1]);
        std::process::abort();
    }
}

fn write_num(out: &mut [u8], mut v: usize) -> usize {
    let mut digits = [0u8; 20];
    let mut i = 0;
    loop {
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        i += 1;
        if v == 0 {
            break;
        }
    }
    for k in 0..i {
        out[k] = digits[i - 1 - k];
    }
    i
}

// SAFETY: every method forwards to the system allocator unchanged; `check`
// only reads an atomic and may abort, which never returns a bad pointer.
unsafe impl GlobalAlloc for Guarded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Enforces the bound for `data` until dropped.
pub struct Guard(());

impl Guard {
    pub fn for_input(data: &[u8]) -> Guard {
        LIMIT.store(BASE.saturating_add(PER_INPUT_BYTE.saturating_mul(data.len())), Ordering::Relaxed);
        Guard(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        LIMIT.store(usize::MAX, Ordering::Relaxed);
    }
}
