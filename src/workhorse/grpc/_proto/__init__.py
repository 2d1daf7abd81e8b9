"""The generated protobuf code; ``python -m workhorse.grpc.regenerate`` remakes it."""
