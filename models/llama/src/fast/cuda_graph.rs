//! Recording decode steps as CUDA graphs under CubeCL 0.10, which has no capture API of its own.
//!
//! CubeCL launches on one CUDA stream per host thread, from its device runner thread. Work
//! handed to the runner with `DeviceHandle::submit_blocking` runs there in order with the queued
//! launches, so a stream capture begun and ended in two such calls records exactly the launches
//! queued between them. The stream itself is a private field of CubeCL's server: its handle is
//! read from the server's `Debug` output, and each candidate is proven by recording one probe
//! launch, which must come back as a graph of exactly one kernel node. Anything unexpected ends
//! in a [`GraphError`] and the decoder launches plainly. (CubeCL ≥ 0.11 has capture built in;
//! moving to it replaces `find_stream` and nothing else.)

use std::any::TypeId;
use std::ptr;

use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::cubecl::prelude::*;
use cubecl_common::device::Device;
use cubecl_common::device_handle::DeviceHandle;
use cudarc::driver::sys;

use super::graph::{GraphError, Recorder};

type Server = <CudaRuntime as Runtime>::Server;

/// A driver handle moved to the runner thread (used there only, one call at a time).
#[derive(Clone, Copy)]
struct Raw<T>(T);
// SAFETY: CUDA driver handles may be used from any thread with the context current; the runner
// thread, where every use happens, has it current.
unsafe impl<T> Send for Raw<T> {}

impl<T: Copy> Raw<T> {
    /// The handle (a method, so closures capture the whole `Raw`, not its field).
    fn get(self) -> T {
        self.0
    }
}

fn check(call: &'static str, code: sys::CUresult) -> Result<(), GraphError> {
    if code == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(GraphError::Driver {
            call,
            code: format!("{code:?}"),
        })
    }
}

/// Records on the stream CubeCL launches this thread's work on.
pub(super) struct CudaRecorder {
    handle: DeviceHandle<Server>,
    stream: Raw<sys::CUstream>,
    graphs: Vec<(Raw<sys::CUgraph>, Raw<sys::CUgraphExec>)>,
}

/// A recorder for `client`'s device when `R` is CUDA. `probe` launches one kernel through the
/// client (on buffers it allocated before the call) and is used to find the stream.
pub(super) fn recorder<R: Runtime>(
    device: &R::Device,
    probe: &dyn Fn(),
) -> Result<Box<dyn Recorder>, GraphError> {
    if TypeId::of::<R>() != TypeId::of::<CudaRuntime>() {
        return Err(GraphError::NotCuda);
    }
    let handle = DeviceHandle::<Server>::new(device.to_id());
    let stream = find_stream(&handle, probe)?;
    Ok(Box::new(CudaRecorder {
        handle,
        stream,
        graphs: Vec::new(),
    }))
}

impl CudaRecorder {
    fn on_runner<T: Send>(
        &self,
        task: impl FnOnce() -> Result<T, GraphError> + Send,
    ) -> Result<T, GraphError> {
        self.handle
            .submit_blocking(move |_server| task())
            .map_err(|e| GraphError::Runner(format!("{e:?}")))?
    }
}

impl Recorder for CudaRecorder {
    fn begin(&mut self) -> Result<(), GraphError> {
        let stream = self.stream;
        self.on_runner(move || begin_capture(stream))
    }

    fn end(&mut self, launches: usize) -> Result<usize, GraphError> {
        let stream = self.stream;
        let (graph, exec) = self.on_runner(move || {
            let graph = end_capture(stream)?;
            let exec = kernel_nodes(graph, launches).and_then(|()| {
                let mut exec = ptr::null_mut();
                // SAFETY: `graph` is the valid graph just captured.
                check("cuGraphInstantiateWithFlags", unsafe {
                    sys::cuGraphInstantiateWithFlags(&mut exec, graph.0, 0)
                })?;
                Ok(Raw(exec))
            });
            match exec {
                Ok(exec) => Ok((graph, exec)),
                Err(e) => {
                    // SAFETY: the graph is ours and instantiated nowhere.
                    unsafe { sys::cuGraphDestroy(graph.0) };
                    Err(e)
                }
            }
        })?;
        self.graphs.push((graph, exec));
        Ok(self.graphs.len() - 1)
    }

    fn replay(&mut self, id: usize) -> Result<(), GraphError> {
        let (stream, exec) = (self.stream, self.graphs[id].1);
        // SAFETY: `exec` is a live instantiated graph and `stream` the stream it was recorded on;
        // the buffers its kernels use belong to the decoder, which outlives its graphs.
        self.on_runner(move || {
            check("cuGraphLaunch", unsafe {
                sys::cuGraphLaunch(exec.get(), stream.get())
            })
        })
    }

    fn clear(&mut self) {
        self.destroy_all();
    }
}

impl Drop for CudaRecorder {
    fn drop(&mut self) {
        self.clear();
    }
}

impl CudaRecorder {
    fn destroy_all(&mut self) {
        let graphs = std::mem::take(&mut self.graphs);
        // SAFETY: the graphs are ours; a graph still running finishes before its exec is freed
        // (the driver defers the release).
        let _ = self.on_runner(move || {
            for (graph, exec) in graphs {
                unsafe {
                    sys::cuGraphExecDestroy(exec.0);
                    sys::cuGraphDestroy(graph.0);
                }
            }
            Ok(())
        });
    }
}

fn begin_capture(stream: Raw<sys::CUstream>) -> Result<(), GraphError> {
    let (mut current, mut owner) = (ptr::null_mut(), ptr::null_mut());
    // SAFETY: plain queries on a stream handle CubeCL created and keeps alive.
    unsafe {
        check("cuCtxGetCurrent", sys::cuCtxGetCurrent(&mut current))?;
        check("cuStreamGetCtx", sys::cuStreamGetCtx(stream.0, &mut owner))?;
    }
    if current.is_null() || current != owner {
        return Err(GraphError::Stream(
            "the stream belongs to another context".into(),
        ));
    }
    // Relaxed: the runner may compile and load a kernel while recording (not a stream call).
    check("cuStreamBeginCapture", unsafe {
        sys::cuStreamBeginCapture_v2(
            stream.0,
            sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
        )
    })
}

fn end_capture(stream: Raw<sys::CUstream>) -> Result<Raw<sys::CUgraph>, GraphError> {
    let mut graph = ptr::null_mut();
    // SAFETY: ends the capture `begin_capture` started on this stream.
    check("cuStreamEndCapture", unsafe {
        sys::cuStreamEndCapture(stream.0, &mut graph)
    })?;
    if graph.is_null() {
        return Err(GraphError::Nodes {
            expected: 1,
            got: 0,
        });
    }
    Ok(Raw(graph))
}

/// Checks that `graph` holds exactly `launches` nodes, all kernel launches: a copy from host
/// memory would replay a stale buffer, an allocation would repeat.
fn kernel_nodes(graph: Raw<sys::CUgraph>, launches: usize) -> Result<(), GraphError> {
    let mut count = 0usize;
    // SAFETY: `graph` is valid; the first call asks the count, the second fills `nodes`.
    unsafe {
        check(
            "cuGraphGetNodes",
            sys::cuGraphGetNodes(graph.0, ptr::null_mut(), &mut count),
        )?;
    }
    if count != launches {
        return Err(GraphError::Nodes {
            expected: launches,
            got: count,
        });
    }
    let mut nodes = vec![ptr::null_mut(); count];
    unsafe {
        check(
            "cuGraphGetNodes",
            sys::cuGraphGetNodes(graph.0, nodes.as_mut_ptr(), &mut count),
        )?;
    }
    for node in nodes {
        let mut kind = sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL;
        // SAFETY: `node` belongs to `graph`.
        check("cuGraphNodeGetType", unsafe {
            sys::cuGraphNodeGetType(node, &mut kind)
        })?;
        if kind != sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL {
            return Err(GraphError::NodeType(format!("{kind:?}")));
        }
    }
    Ok(())
}

/// The stream this thread's launches go to: every stream handle in the server's `Debug` output,
/// tried in turn by recording `probe`'s one launch on it.
fn find_stream(
    handle: &DeviceHandle<Server>,
    probe: &dyn Fn(),
) -> Result<Raw<sys::CUstream>, GraphError> {
    let text = handle
        .submit_blocking(|server| format!("{server:?}"))
        .map_err(|e| GraphError::Runner(format!("{e:?}")))?;
    let candidates = stream_handles(&text);
    if candidates.is_empty() {
        return Err(GraphError::Stream("no stream in the server's state".into()));
    }
    let mut last = GraphError::Stream("no stream recorded the probe launch".into());
    for address in candidates {
        let stream = Raw(address as sys::CUstream);
        let recorder = CudaRecorder {
            handle: handle.clone(),
            stream,
            graphs: Vec::new(),
        };
        if let Err(e) = recorder.on_runner(move || begin_capture(stream)) {
            last = e;
            continue;
        }
        probe();
        let proven = recorder.on_runner(move || {
            let graph = end_capture(stream)?;
            let one = kernel_nodes(graph, 1);
            // SAFETY: the probe graph is ours and never instantiated.
            unsafe { sys::cuGraphDestroy(graph.0) };
            one
        });
        match proven {
            Ok(()) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Every `sys: 0x…` value in `text`, in order, without repeats.
fn stream_handles(text: &str) -> Vec<usize> {
    let mut found = Vec::new();
    for part in text.split("sys: 0x").skip(1) {
        let hex: String = part.chars().take_while(char::is_ascii_hexdigit).collect();
        if let Ok(address) = usize::from_str_radix(&hex, 16) {
            if address != 0 && !found.contains(&address) {
                found.push(address);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::stream_handles;

    #[test]
    fn stream_handles_are_read_from_debug_output_in_order() {
        let text = "MultiStream { streams: [None, Some(StreamWrapper { stream: Stream { sys: \
                    0x7f00aa10, memory: [] } }), Some(StreamWrapper { stream: Stream { sys: \
                    0x7f00bb20 } }), Some(Stream { sys: 0x7f00aa10 })], comm_stream: 0x55 }";
        assert_eq!(stream_handles(text), vec![0x7f00aa10, 0x7f00bb20]);
        assert!(stream_handles("no streams here, sys: 0x").is_empty());
    }
}
