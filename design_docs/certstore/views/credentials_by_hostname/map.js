function (doc) {
  // Credential requests by each host name they cover: "who already asks for www.example.com?"
  var i;
  if (doc.type === 'tls_credential' && Object.prototype.toString.call(doc.hostnames) === '[object Array]') {
    for (i = 0; i < doc.hostnames.length; i++) {
      emit(doc.hostnames[i], null);
    }
  }
}
