"""A gRPC server in the event loop: HTTP/2 framing and calls for etcd's servicers."""

from meshkit.server.h2grpc.server import GrpcServer

__all__ = ["GrpcServer"]
