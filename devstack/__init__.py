"""Local-only tooling: the dev stack (moto, the Flux emulator, the dev identity
provider, the SQS poller). Never packaged by Chalice; never imported by chalicelib."""
