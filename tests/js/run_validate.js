// Runs design-document JavaScript the way CouchDB does, without a server, for tests/test_design.py.
//
// stdin: {"validate": "<validate_doc_update source>", "cases": [{"doc", "old_doc", "user_ctx", "sec_obj"}]}
//    or: {"map": "<map function source>", "docs": [doc, ...]}
// stdout: for "validate", one {"verdict": "ok"|"forbidden"|"unauthorized"|"crash", "message"} per case;
//         for "map", one list of [key, value] rows per doc.
// Each function is compiled in a fresh context holding only what CouchDB's sandbox offers (emit, log),
// and also through "return " + source, as pouchdb-server does, so an ASI trap at the start is caught.
'use strict';
const vm = require('vm');

function compile(source, sandbox) {
  const viaReturn = new Function('return ' + source)();
  if (typeof viaReturn !== 'function') {
    throw new Error('"return " + source does not yield a function (a comment or newline before "function"?)');
  }
  const fn = vm.runInNewContext('(' + source + ')', sandbox);
  if (typeof fn !== 'function') {
    throw new Error('source is not a function expression');
  }
  return fn;
}

function runValidate(source, cases) {
  const validate = compile(source, {log: function () {}});
  return cases.map(function (c) {
    try {
      validate(c.doc, c.old_doc || null, c.user_ctx || {name: 'admin', roles: ['_admin']},
        c.sec_obj || {admins: {names: [], roles: []}, members: {names: [], roles: []}});
      return {verdict: 'ok', message: ''};
    } catch (e) {
      if (e !== null && typeof e === 'object' && typeof e.forbidden === 'string') {
        return {verdict: 'forbidden', message: e.forbidden};
      }
      if (e !== null && typeof e === 'object' && typeof e.unauthorized === 'string') {
        return {verdict: 'unauthorized', message: e.unauthorized};
      }
      return {verdict: 'crash', message: String(e && e.stack ? e.stack : e)};
    }
  });
}

function runMap(source, docs) {
  let rows = [];
  const map = compile(source, {emit: function (key, value) { rows.push([key, value]); }, log: function () {}});
  return docs.map(function (doc) {
    rows = [];
    map(doc);
    return rows;
  });
}

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', function (chunk) { input += chunk; });
process.stdin.on('end', function () {
  const request = JSON.parse(input);
  const result = request.validate !== undefined ?
    runValidate(request.validate, request.cases) : runMap(request.map, request.docs);
  process.stdout.write(JSON.stringify(result));
});
