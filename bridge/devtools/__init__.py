"""Tools for the demo, the benchmarks and the tests: pcap files and SIPp callers.

Not used by the daemon itself.
"""
