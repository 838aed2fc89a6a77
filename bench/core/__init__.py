"""The contract every layer shares: errors, the hook markers, the strategy protocol and its
output, the run context a strategy receives, option fields and progress output.

Nothing here imports torch or any other layer of ``bench``; every other subpackage may import it.
"""
