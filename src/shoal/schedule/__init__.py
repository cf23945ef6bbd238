"""The controller: ready set, slots, bundles, retries, keep-going, stop; specs built for
dispatch. Knows backends only through backends.base.
"""
