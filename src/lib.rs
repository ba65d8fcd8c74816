//! kafka-mirror: Kafka cluster-to-cluster replication by forwarding raw record batches.

pub mod net;
