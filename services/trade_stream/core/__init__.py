"""The core: the refcounting hub, serialize-once fan-out, the client protocol and the order log."""
