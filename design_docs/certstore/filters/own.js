function (doc, req) {
  // What a server's replica sends to the hub: the documents that server writes, its server:
  // heartbeat and its deploy: reports (all its user may write on the hub). Everything else on the
  // replica came from the hub; sending it back would cost the hub a revs_diff for every change.
  var server = (req.query && req.query.server) || '';
  var id = doc._id;
  return id === 'server:' + server || id.indexOf('deploy:' + server + ':') === 0;
}
