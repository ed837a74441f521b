"""Generated code for the `aigateway.v1` proto package. Do not edit; run `make generate`."""
