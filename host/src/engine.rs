//! The wasmtime `Engine` and `Linker`, built once per process and shared by every component.
//!
//! - Pooling allocator: instance memories and tables come from slots reserved at start, so a
//!   fresh instance per request costs microseconds, not `mmap` calls. A slot given back keeps
//!   its pages resident: the pages the instance wrote are found with the kernel's
//!   `PAGEMAP_SCAN` (Linux 6.7 and later) and zeroed or restored with `memset`, instead of
//!   `madvise` handing them back to the kernel, which costs page faults on the next request
//!   and TLB shootdowns on every core.
//! - Epoch interruption: a background thread ticks the engine's epoch every [`EPOCH_TICK`]. At
//!   each tick a running guest yields to the async runtime (so a CPU-bound guest shares the
//!   worker threads with every other request instead of holding one), and traps once its unit
//!   of work's deadline has passed (see [`crate::service::unit_of_work`]).
//! - The `Linker` holds WASI p2 (what Rust's `std` imports), `wasi:http`, and the platform's
//!   capabilities. What a component may actually reach is decided per store in [`crate::state`].
//! - Proposals the host does not run are off: without the `gc` build feature wasmtime 48 still
//!   accepts the GC proposal's function subtyping, with which a guest could abort the process
//!   (GHSA-rc4p-x33f-vpr2, fixed in 48.0.9); with it off, such a component fails to compile.
//! - A trap carries no guest backtrace unless `limits.wasm_backtraces` asks for one: walking a
//!   deep stack (a recursion that overflowed) costs milliseconds a trap, and logging it megabytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::component::Linker;
use wasmtime::error::Context;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::CompileCache;
use crate::config::Limits;
use crate::state::StoreState;

/// Frames of a guest's stack a trap's message shows, when `limits.wasm_backtraces` asks for them.
const BACKTRACE_FRAMES: std::num::NonZeroUsize = std::num::NonZeroUsize::new(20).expect("not zero");

pub use crate::turns::EPOCH_TICK;

/// Core instances, memories and tables one component instance may have. A Rust component has
/// a handful of core modules (its own, the WASI adapter's, and shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 20;

/// Bytes of a linear memory kept resident when its slot is given back: more than a request
/// of a service component dirties (its data, heap and shadow stack), so the common case needs
/// no `madvise`. Without `PAGEMAP_SCAN` wasmtime zeroes the first this many bytes instead.
const MEMORY_KEEP_RESIDENT: usize = 2 << 20;

/// Bytes of a table kept resident when its slot is given back (a component's function tables
/// are a few KiB).
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// The engine and linker every component of this process is loaded with.
pub struct Runtime {
    /// The engine every component is compiled for and every store runs in: its pooling
    /// allocator, and the epoch the ticker thread advances.
    pub engine: Engine,
    /// The imports a component may link to: WASI p2, `wasi:http` and the platform's
    /// capabilities; each component's code is pre-instantiated against it.
    pub linker: Linker<StoreState>,
    /// Compiled components kept on disk, for this engine.
    pub cache: CompileCache,
    /// Stops the epoch thread when the runtime is dropped.
    ticking: Arc<AtomicBool>,
}

impl Runtime {
    /// Builds the engine under `limits` (instance memory, the pool's size, backtraces), links
    /// the imports, starts the epoch thread and opens the compile cache in `cache_dir`.
    pub fn new(limits: &Limits, cache_dir: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let memory_bytes = limits.memory_mib * 1024 * 1024;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits.max_instances)
            .total_core_instances(limits.max_instances * CORE_INSTANCES_PER_COMPONENT)
            .total_memories(limits.max_instances * 2)
            .total_tables(limits.max_instances * CORE_INSTANCES_PER_COMPONENT)
            .total_stacks(limits.max_instances)
            .max_memory_size(memory_bytes as usize)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_tables_per_component(CORE_INSTANCES_PER_COMPONENT)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            .pagemap_scan(Enabled::Auto);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .wasm_gc(false)
            .wasm_backtrace_max_frames(limits.wasm_backtraces.then_some(BACKTRACE_FRAMES))
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).context("cannot create the wasmtime engine")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).context("cannot link WASI")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .context("cannot link wasi:http")?;
        crate::capabilities::add_to_linker(&mut linker)?;

        let ticking = Arc::new(AtomicBool::new(true));
        let weak_engine = engine.weak();
        let still_ticking = ticking.clone();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while still_ticking.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .context("cannot start the epoch thread")?;
        let cache = CompileCache::new(cache_dir, &engine);
        Ok(Self {
            engine,
            linker,
            cache,
            ticking,
        })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_using_gc_function_subtyping_is_refused() {
        let runtime = Runtime::new(&crate::config::Limits::for_tests(), None).expect("runtime");
        // A type section holding one non-final (`sub`) function type `[] -> []`.
        let module = [
            0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x06, 0x01, 0x50, 0x00, 0x60,
            0x00, 0x00,
        ];
        let error = wasmtime::Module::validate(&runtime.engine, &module).expect_err("refused");
        assert!(format!("{error:#}").contains("gc"), "{error:#}");
        // The same type, final, is ordinary WebAssembly.
        let plain = [
            0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00,
        ];
        wasmtime::Module::validate(&runtime.engine, &plain).expect("valid");
    }
}
