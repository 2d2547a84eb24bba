"""Tessera's wire contract as Python: the code ``make protos`` generates from
``protos/`` (never edited by hand), and ``descriptors.binpb``, the descriptors
with their comments that the server's reflection serves. The server and the
client SDK both import it; neither imports the other."""
