function (doc, req) {
  // What a server's replica holds: everything but the other servers' own documents (their
  // server: heartbeats and deploy: reports), which only the hub needs. Without it every report
  // of every server would travel to every replica: N x N documents for a fleet of N.
  var server = (req.query && req.query.server) || '';
  var id = doc._id;
  if (id.indexOf('deploy:') === 0) {
    return id.indexOf('deploy:' + server + ':') === 0;
  }
  if (id.indexOf('server:') === 0) {
    return id === 'server:' + server;
  }
  return true;
}
