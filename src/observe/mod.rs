//! What the process shows of itself while it runs: the board of each flow's
//! latest snapshot ([`board`]), which the HTTP endpoint, the metrics and the
//! progress display read; the Prometheus [`metrics`] rendered from it, and
//! the [`http`] endpoint that serves both.

pub mod board;
pub mod http;
pub mod metrics;

pub use board::{
    Board, Connected, FlowHandle, FlowPhase, FlowView, Lag, PartitionState, PartitionView,
    TopicTotals, Transactions, UnknownFlow,
};
