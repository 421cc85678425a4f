"""Device backends the parent partition serves to guests (virtio)."""
