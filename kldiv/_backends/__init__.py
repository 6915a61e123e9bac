"""The fast paths, one per array library, each a package or module of its own.

Each exposes some of the functions of :mod:`kldiv._agnostic`, with the same signatures;
:mod:`kldiv._dispatch` picks, per function and library, the fast path's function where it
has one and the generic code where it does not.
"""
