"""What runs around every call before and after its servicer: access, decoding, observation."""
