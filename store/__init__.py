"""certstore's store layer: documents, the CouchDB client, the changes follower and key sealing."""
