function (doc) {
  // Credential requests by each server with access: what an agent must deploy.
  var i;
  if (doc.type === 'tls_credential' && Object.prototype.toString.call(doc.servers) === '[object Array]') {
    for (i = 0; i < doc.servers.length; i++) {
      emit(doc.servers[i], null);
    }
  }
}
