"""The agent's pure core: no I/O, no clock, no adapters. Everything here is unit-tested with
plain values, and a desktop's whole day is replayed through it with a fake clock."""
