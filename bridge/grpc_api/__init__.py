"""The gRPC side: one servicer per service, and the checks a request passes before it is sent."""
