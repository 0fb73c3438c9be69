"""Asynchronous SPMD protocols written against :class:`privcomp.transport.base.Transport`."""
