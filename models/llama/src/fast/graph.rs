//! Recorded decode steps: a step's launches captured once as a CUDA graph and replayed with one
//! call, instead of ~300 launches each costing the host several microseconds. A step is recorded
//! per shape ([`StepShape`]); everything else a step changes lives in device buffers the decoder
//! keeps (see `inputs.rs`). The recording itself is runtime specific (`cuda_graph.rs`).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

/// Whether decode steps are recorded and replayed as CUDA graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphMode {
    /// On CUDA where recording works (the stream found and proven when turned on, every graph
    /// checked when recorded); plain launches elsewhere.
    Auto,
    /// Required: a decoder that cannot record its steps is an error.
    On,
    /// Plain launches (the default: recording has not been measured on a GPU yet).
    #[default]
    Off,
}

impl FromStr for GraphMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            _ => Err(format!("CUDA graphs: expected auto, on or off, got {s:?}")),
        }
    }
}

/// What a decoder does with its steps, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphState {
    /// Plain launches (graphs off, or not a CUDA device).
    Off,
    /// Plain launches because recording failed; the reason.
    Refused(String),
    /// Steps replayed from graphs: how many graphs were recorded and how many steps replayed.
    On { graphs: usize, replays: u64 },
}

impl std::fmt::Display for GraphState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Off => write!(f, "off"),
            Self::Refused(why) => write!(f, "refused ({why})"),
            Self::On { graphs, replays } => {
                write!(f, "on ({graphs} graphs, {replays} steps replayed)")
            }
        }
    }
}

/// Why a step could not be recorded or replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("CUDA graphs need a CUDA device")]
    NotCuda,
    #[error("the decoder's CUDA stream was not found ({0})")]
    Stream(String),
    #[error("CUDA {call} failed: {code}")]
    Driver { call: &'static str, code: String },
    #[error("the recorded step holds {got} nodes, the step launched {expected} kernels")]
    Nodes { expected: usize, got: usize },
    #[error("the recorded step holds a {0} node (only kernel launches replay correctly)")]
    NodeType(String),
    #[error("the device runner did not answer: {0}")]
    Runner(String),
}

/// A runtime's way to record the launches between `begin` and `end` on this thread's stream.
pub(super) trait Recorder {
    fn begin(&mut self) -> Result<(), GraphError>;
    /// Ends the recording. The graph must hold exactly `launches` kernel nodes and nothing else
    /// (no copies from host memory, no allocations); its id replays it.
    fn end(&mut self, launches: usize) -> Result<usize, GraphError>;
    /// Queues graph `id` on the stream, after the launches before it.
    fn replay(&mut self, id: usize) -> Result<(), GraphError>;
    /// Frees every graph (the buffers they use are about to change).
    fn clear(&mut self);
}

/// What a recorded step depends on besides device buffers: rows, planned spans, step kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct StepShape {
    pub rows: usize,
    pub span: usize,
    pub list_span: usize,
    pub prunes: bool,
    pub flush: bool,
}

/// The decoder's graphs: a recorder, the graph of every step shape seen twice, the counts.
/// A shape's first step launches plainly (it compiles kernels and settles CubeCL's own state);
/// its second is recorded, and every later one replayed.
pub(super) struct StepGraphs {
    recorder: Box<dyn Recorder>,
    seen: HashSet<StepShape>,
    /// Graph id and kernel count of each recorded shape.
    graphs: HashMap<StepShape, (usize, usize)>,
    replays: u64,
}

impl StepGraphs {
    pub fn new(recorder: Box<dyn Recorder>) -> Self {
        Self {
            recorder,
            seen: HashSet::new(),
            graphs: HashMap::new(),
            replays: 0,
        }
    }

    pub fn state(&self) -> GraphState {
        GraphState::On {
            graphs: self.graphs.len(),
            replays: self.replays,
        }
    }

    pub fn clear(&mut self) {
        self.recorder.clear();
        self.seen.clear();
        self.graphs.clear();
    }

    /// Runs the step of `shape` and returns its kernel count: `launch` (which launches the
    /// step's kernels and returns their count) plainly, recorded then replayed, or not at all
    /// when the shape's graph exists. An error of `launch` ends the recording unused.
    pub fn run<E: From<GraphError>>(
        &mut self,
        shape: StepShape,
        launch: impl FnOnce() -> Result<usize, E>,
    ) -> Result<usize, E> {
        if self.seen.insert(shape) {
            return launch();
        }
        let (id, kernels) = match self.graphs.get(&shape) {
            Some(&recorded) => recorded,
            None => {
                self.recorder.begin()?;
                let launched = launch();
                let recorded = self.recorder.end(*launched.as_ref().unwrap_or(&0));
                let kernels = launched?;
                let id = recorded?;
                self.graphs.insert(shape, (id, kernels));
                (id, kernels)
            }
        };
        self.recorder.replay(id)?;
        self.replays += 1;
        Ok(kernels)
    }
}

/// Records `launch` (which launches `kernels` kernels through `client`) the way the decoder
/// records a step, replays it once and waits for it: the check a step's graph must pass, open to
/// tests of what a recording refuses (a host copy, an allocation).
pub fn record_once<R: burn_cubecl::cubecl::Runtime>(
    client: &burn_cubecl::cubecl::client::ComputeClient<R>,
    device: &R::Device,
    kernels: usize,
    launch: impl FnOnce(),
) -> Result<(), GraphError> {
    let (from, to) = (client.empty(16), client.empty(16));
    let probe = || spotlight_kernels::copy::copy(client, &from, &to, 1);
    let mut recorder = super::cuda_graph::recorder::<R>(device, &probe)?;
    recorder.begin()?;
    launch();
    let id = recorder.end(kernels)?;
    recorder.replay(id)?;
    burn_cubecl::cubecl::future::block_on(client.sync())
        .map_err(|e| GraphError::Runner(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// What a recorder was asked to do, in order; `fail_end` makes the next `end` fail.
    #[derive(Default)]
    struct Log {
        calls: Vec<String>,
        fail_end: bool,
    }

    struct Scripted(Rc<RefCell<Log>>);

    impl Recorder for Scripted {
        fn begin(&mut self) -> Result<(), GraphError> {
            self.0.borrow_mut().calls.push("begin".into());
            Ok(())
        }
        fn end(&mut self, launches: usize) -> Result<usize, GraphError> {
            let mut log = self.0.borrow_mut();
            log.calls.push(format!("end {launches}"));
            if std::mem::take(&mut log.fail_end) {
                return Err(GraphError::NodeType("memcpy".into()));
            }
            Ok(log.calls.len())
        }
        fn replay(&mut self, id: usize) -> Result<(), GraphError> {
            self.0.borrow_mut().calls.push(format!("replay {id}"));
            Ok(())
        }
        fn clear(&mut self) {
            self.0.borrow_mut().calls.push("clear".into());
        }
    }

    fn shape(span: usize) -> StepShape {
        StepShape {
            rows: 1,
            span,
            list_span: 0,
            prunes: false,
            flush: false,
        }
    }

    /// A shape's first step launches plainly, its second is recorded and replayed, later ones
    /// only replay; a new shape starts over; a refused recording is tried again next time.
    #[test]
    fn steps_launch_then_record_then_replay_per_shape() {
        let log = Rc::new(RefCell::new(Log::default()));
        let mut graphs = StepGraphs::new(Box::new(Scripted(log.clone())));
        let launched = Rc::new(RefCell::new(0));
        let step = |graphs: &mut StepGraphs, span| {
            let launched = launched.clone();
            graphs.run(shape(span), move || -> Result<usize, GraphError> {
                *launched.borrow_mut() += 1;
                Ok(7)
            })
        };
        let take = |log: &Rc<RefCell<Log>>| std::mem::take(&mut log.borrow_mut().calls);
        assert_eq!(step(&mut graphs, 128), Ok(7));
        assert!(take(&log).is_empty(), "first step: plain launches");
        assert_eq!(step(&mut graphs, 128), Ok(7));
        assert_eq!(take(&log), ["begin", "end 7", "replay 2"]);
        assert_eq!(step(&mut graphs, 128), Ok(7));
        assert_eq!(take(&log), ["replay 2"], "later steps launch nothing");
        assert_eq!(*launched.borrow(), 2);
        assert_eq!(step(&mut graphs, 160), Ok(7));
        assert!(take(&log).is_empty(), "a new span launches plainly first");
        log.borrow_mut().fail_end = true;
        let refused = step(&mut graphs, 160);
        assert_eq!(refused, Err(GraphError::NodeType("memcpy".into())));
        assert_eq!(take(&log), ["begin", "end 7"]);
        assert_eq!(step(&mut graphs, 160), Ok(7));
        assert_eq!(take(&log), ["begin", "end 7", "replay 2"]);
        assert_eq!(
            graphs.state(),
            GraphState::On {
                graphs: 2,
                replays: 3
            }
        );
        graphs.clear();
        assert_eq!(take(&log), ["clear"]);
        assert_eq!(step(&mut graphs, 128), Ok(7));
        assert!(take(&log).is_empty(), "after clear, shapes start over");
    }
}
