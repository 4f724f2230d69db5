"""The HiveMind Node Pool wire protocol: `nodepool.proto` and its generated stubs.

Import the generated modules as `proto.nodepool_pb2` and `proto.nodepool_pb2_grpc`;
regenerate them with `python -m proto.build` (never edit them by hand).
"""
