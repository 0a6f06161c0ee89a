"""The ground floor: general tools every other package may use, importing none of them.

``configtable`` (strict config tables and their diffs), ``registry`` (one name -> one factory with
checked options), ``checkpoints`` (finding, verifying and loading weights without unpickling),
``files`` (the one atomic writer, hashing), ``filesystems`` (paths and URLs through ``pyarrow.fs``,
store faults in one line), ``limits`` (decode limits), ``contract`` (the output contract's names).
"""
