"""Abstract messaging between parties (layer: transport; no grpc, no protobuf)."""
