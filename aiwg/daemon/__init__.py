"""The daemon: Twisted services and protocols, each thin over aiwg.core."""
