function (doc) {
  // Credential state documents by status (value: not_after, when issued); reduce counts per status.
  if (doc.type === 'tls_credential_state' && typeof doc.status === 'string') {
    emit(doc.status, doc.not_after || null);
  }
}
