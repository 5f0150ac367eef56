"""gRPC servicers: translate protobuf messages to task inputs and back."""
