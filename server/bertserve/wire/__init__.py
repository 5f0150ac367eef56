"""The wire layer: gRPC servicers, interceptors, authentication and the status mapping.

Servicers (`services`) turn protobuf messages into task inputs and back;
`status` is the one mapping from bertserve errors to gRPC statuses, used by
the request interceptor and by authentication alike. Imports the runtime and
the plugin contract.
"""
