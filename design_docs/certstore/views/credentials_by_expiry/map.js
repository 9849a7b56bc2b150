function (doc) {
  // Credential state documents by not_after (ISO-8601 UTC, so keys sort by time); value: status.
  if (doc.type === 'tls_credential_state' && typeof doc.not_after === 'string') {
    emit(doc.not_after, doc.status);
  }
}
