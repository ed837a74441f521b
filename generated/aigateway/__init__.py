"""Generated code for the `aigateway` proto package. Do not edit; run `make generate`."""
