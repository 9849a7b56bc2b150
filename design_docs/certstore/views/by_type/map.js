function (doc) {
  // Every certstore document by type; reduce counts per type (certstore status).
  if (typeof doc.type === 'string') {
    emit(doc.type, null);
  }
}
