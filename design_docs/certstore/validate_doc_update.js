function (newDoc, oldDoc, userCtx, secObj) {
  // certstore's database rules: who may write which document, and the document model itself.
  // Twin of store/names.py + store/documents.py: tests/test_design.py feeds the same corpus to both and
  // requires the same verdicts. Plain ES5 only (SpiderMonkey, QuickJS, pouchdb-server). No comment may
  // precede "function": some evaluators prepend "return " to this source.

  var KEY_TYPES = ['ecdsa-p256', 'ecdsa-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'];
  var STATUSES = ['draft', 'pending', 'issued', 'renew', 'revoked', 'error', 'expired', 'waiting',
    'archived'];
  var CHALLENGES = ['auto', 'http-01', 'dns-01'];
  var PROVIDERS = ['acme', 'import', 'manual-csr', 'internal-ca'];
  var DNS_KINDS = ['rfc2136', 'lexicon', 'exec'];
  var REASONS = ['unspecified', 'keyCompromise', 'cACompromise', 'affiliationChanged', 'superseded',
    'cessationOfOperation', 'certificateHold', 'privilegeWithdrawn', 'aACompromise'];
  var COUCH_FIELDS = ['_id', '_rev', '_deleted', '_attachments', '_conflicts', '_deleted_conflicts',
    '_local_seq', '_revs_info', '_revisions'];
  var ACTIONS = ['renew', 'revoke', 'rekey'];
  var OUTCOME_FIELDS = ['ok', 'at', 'message'];
  // Statuses issued and renew promise a deployable certificate: the state must then carry all of it.
  var CERTIFICATE_FIELDS = ['chain_pem', 'not_before', 'not_after', 'serial', 'fingerprint_sha256',
    'sealed_key'];
  var MAX_HOSTNAMES = 100;
  var MAX_TEXT = 2000;
  var MAX_SERVERS = 1000;
  var MAX_ROLES = 20;
  var MAX_CONTACTS = 10;
  var MAX_PATHS = 32;
  var MAX_ERROR_HISTORY = 20;
  var MAX_REV = 200;
  var MAX_FAILURES = 1000000;

  var NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;
  var TOKEN_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
  var CHALLENGE_TOKEN_RE = /^[A-Za-z0-9_-]{16,128}$/;
  var LABEL_RE = /^[a-z0-9-]+$/;
  var KEY_ID_RE = /^x25519:[0-9a-f]{32}$/;
  var X25519_RE = /^[A-Za-z0-9+\/]{42}[AEIMQUYcgkosw048]=$/;
  var EAB_KID_RE = /^[A-Za-z0-9._-]{1,256}$/;
  var THUMBPRINT_RE = /^[A-Za-z0-9_-]{43}$/;
  var SERIAL_RE = /^[0-9a-f]{1,40}$/;
  var SHA256_RE = /^[0-9a-f]{64}$/;
  var IPV4_RE = /^[0-9]+(\.[0-9]+){3}$/;
  var IPV6_RE = /^\[?[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*\]?$/;
  var URL_RE = /^(https?):\/\/([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(\/[!-~]*)?$/;
  var MAILTO_RE = /^mailto:[!-?A-~]+@[!-?A-~]+$/;
  var ENDPOINT_RE = /^([a-z0-9.-]+|\[[0-9a-f:.]+\]):([0-9]{1,5})$/;
  var TIMESTAMP_RE = /^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.([0-9]{1,6}))?Z$/;
  var PRIVATE_KEY_RE = /-----BEGIN[ \t\r\n]+(?:[A-Z0-9]+[ \t\r\n]+)*PRIVATE[ \t\r\n]+KEY/;

  function has(list, value) {
    for (var i = 0; i < list.length; i++) {
      if (list[i] === value) {
        return true;
      }
    }
    return false;
  }

  function isObject(value) {
    return value !== null && typeof value === 'object' && !isArray(value);
  }

  function isArray(value) {
    return Object.prototype.toString.call(value) === '[object Array]';
  }

  function show(value) {
    var text = JSON.stringify(value);
    if (text === undefined) {
      text = String(value);
    }
    var cut = 76;
    var code = text.charCodeAt(cut - 1);
    if (text.length <= 80) {
      return text;
    }
    if (code >= 0xD800 && code <= 0xDBFF) {
      cut -= 1; // never split a surrogate pair
    }
    return text.substring(0, cut) + '..."';
  }

  function absent(value) {
    return value === undefined || value === null;
  }

  function asInteger(value) {
    if (typeof value !== 'number' || !isFinite(value) || Math.floor(value) !== value) {
      return null;
    }
    return value;
  }

  // --- value rules (each returns the reason, or null)

  function ipProblem(name) {
    if (IPV4_RE.test(name) || IPV6_RE.test(name)) {
      return 'is an IP address; certificates for IP addresses are not supported, use a DNS name';
    }
    return null;
  }

  function labelProblem(label) {
    if (label === '') {
      return 'has an empty label';
    }
    if (label.indexOf('*') !== -1) {
      return 'a wildcard must be the whole left-most label ("*.example.com")';
    }
    if (label.length > 63) {
      return 'label ' + show(label) + ' is longer than 63 characters';
    }
    if (!LABEL_RE.test(label)) {
      return 'label ' + show(label) + ' may only contain a-z, 0-9 and "-"';
    }
    if (label.charAt(0) === '-' || label.charAt(label.length - 1) === '-') {
      return 'label ' + show(label) + ' starts or ends with a hyphen';
    }
    if (label.substring(2, 4) === '--' && label.substring(0, 4) !== 'xn--') {
      return 'label ' + show(label) + ' has "--" in third and fourth position, which is reserved for "xn--"';
    }
    return null;
  }

  function hostnameProblem(name, wildcard) {
    var labels, problem, i;
    if (name === '') {
      return 'is empty';
    }
    if (name.length > 253) {
      return 'is longer than 253 characters';
    }
    problem = ipProblem(name);
    if (problem !== null) {
      return problem;
    }
    if (/[^\x00-\x7f]/.test(name) || name !== name.toLowerCase() || name.charAt(name.length - 1) === '.') {
      return 'is not in normalised form: write it in lowercase punycode (xn--...) without a trailing dot, ' +
        'or add it with the certstore CLI, which converts it';
    }
    labels = name.split('.');
    if (labels[0] === '*') {
      if (!wildcard) {
        return 'may not be a wildcard here';
      }
      labels = labels.slice(1);
    }
    if (labels.length < 2) {
      return 'needs at least two labels (like host.example.com)';
    }
    for (i = 0; i < labels.length; i++) {
      problem = labelProblem(labels[i]);
      if (problem !== null) {
        return problem;
      }
    }
    if (/^[0-9]+$/.test(labels[labels.length - 1])) {
      return 'the last label ' + show(labels[labels.length - 1]) + ' is all digits';
    }
    return null;
  }

  function hostnameRule(wildcard) {
    return function (name) {
      return hostnameProblem(name, wildcard);
    };
  }

  function nameProblem(value) {
    if (!NAME_RE.test(value)) {
      return 'must be 1-63 characters of a-z, 0-9, ".", "_" and "-", starting with a letter or digit';
    }
    if (value.indexOf('..') !== -1) {
      return 'must not contain ".."';
    }
    return null;
  }

  function patternRule(re, reason) {
    return function (value) {
      return re.test(value) ? null : reason;
    };
  }

  var challengeTokenProblem = patternRule(CHALLENGE_TOKEN_RE,
    'must be 16-128 base64url characters (A-Z, a-z, 0-9, _ and -)');
  var tokenProblem = patternRule(TOKEN_RE,
    'must be 1-64 characters of A-Z, a-z, 0-9, ".", "_" and "-", starting with a letter or digit');
  var keyIdProblem = patternRule(KEY_ID_RE,
    'must be "x25519:" followed by 32 lowercase hex digits (the hash of the public key)');
  var x25519Problem = patternRule(X25519_RE,
    'must be a 32-byte X25519 public key in standard base64 (44 characters ending in =)');
  var eabKidProblem = patternRule(EAB_KID_RE,
    'must be the key id your CA gave you: 1-256 characters of A-Z, a-z, 0-9, ., _ and -');
  var serialProblem = patternRule(SERIAL_RE, 'must be the serial number in lowercase hex (up to 40 digits)');
  var sha256Problem = patternRule(SHA256_RE, 'must be a SHA-256 fingerprint as 64 lowercase hex digits');

  function keyfileProblem(value) {
    var problem = tokenProblem(value);
    if (problem === null && value.indexOf('..') !== -1) {
      problem = 'must not contain ".."';
    }
    return problem;
  }

  function urlProblem(value, schemes) {
    var match = URL_RE.exec(value);
    if (match === null || !has(schemes, match[1]) || value.length > 2048) {
      return 'must be a ' + schemes.join(' or ') + ' URL (ASCII, no spaces, at most 2048 characters)';
    }
    return null;
  }

  function httpsProblem(value) {
    return urlProblem(value, ['https']);
  }

  function anyUrlProblem(value) {
    return urlProblem(value, ['http', 'https']);
  }

  function contactProblem(value) {
    if (!MAILTO_RE.test(value) || value.length > 320) {
      return 'must be an e-mail address written as "mailto:admin@example.com"';
    }
    return null;
  }

  function notifyProblem(value) {
    if (contactProblem(value) === null || httpsProblem(value) === null) {
      return null;
    }
    return 'must be "mailto:someone@example.com" or an https:// webhook URL';
  }

  function endpointProblem(value) {
    var match = ENDPOINT_RE.exec(value);
    var port = match === null ? 0 : parseInt(match[2], 10);
    if (port < 1 || port > 65535) {
      return 'must be host:port, like "localhost:443", "127.0.0.1:8443" or "[::1]:443"';
    }
    return null;
  }

  function absolutePathProblem(value) {
    if (value.charAt(0) !== '/' || value.indexOf('\u0000') !== -1 || has(value.split('/'), '..') ||
        value.length > 4096) {
      return 'must be an absolute path (starting with "/", no ".." segments, at most 4096 characters)';
    }
    return null;
  }

  function chainProblem(value) {
    if (value.indexOf('-----BEGIN CERTIFICATE-----') === -1 || value.length > 65536) {
      return 'must be PEM certificates ("-----BEGIN CERTIFICATE-----"), at most 65536 characters';
    }
    return null;
  }

  function keyAuthorizationRule(token) {
    return function (value) {
      var prefix = token + '.';
      var thumbprint = value.substring(prefix.length);
      if (value.substring(0, prefix.length) !== prefix || !THUMBPRINT_RE.test(thumbprint)) {
        return 'must be the challenge token, a dot and the 43-character account key thumbprint';
      }
      return null;
    };
  }

  function choiceRule(choices) {
    return function (value) {
      return has(choices, value) ? null : 'must be one of ' + choices.join(', ');
    };
  }

  // A sortable key for a valid timestamp (fraction padded to microseconds), or null when invalid.
  function timestampKey(value) {
    var m = TIMESTAMP_RE.exec(value);
    var year, month, day, hour, minute, second, date, fraction;
    if (m === null) {
      return null;
    }
    year = parseInt(m[1], 10);
    month = parseInt(m[2], 10);
    day = parseInt(m[3], 10);
    hour = parseInt(m[4], 10);
    minute = parseInt(m[5], 10);
    second = parseInt(m[6], 10);
    if (year < 1970 || month < 1 || month > 12 || hour > 23 || minute > 59 || second > 59) {
      return null;
    }
    date = new Date(0);
    date.setUTCFullYear(year, month - 1, day);
    if (date.getUTCFullYear() !== year || date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day) {
      return null;
    }
    fraction = (m[8] || '') + '000000';
    return value.substring(0, 19) + '.' + fraction.substring(0, 6);
  }

  function timestampProblem(value) {
    if (timestampKey(value) === null) {
      return 'must be an ISO-8601 UTC timestamp like "2026-01-31T12:00:00Z" (year 1970 or later)';
    }
    return null;
  }

  // --- plaintext private keys

  // Same walk as store/names.py find_plaintext_private_key: depth-first in document order, each key
  // looked at just before its value; returns the path of the first hit or null.
  function findPrivateKey(root) {
    var stack = [['$', root]];
    var item, path, value, prefix, children, key, i;
    while (stack.length > 0) {
      item = stack.pop();
      path = item[0];
      value = item[1];
      if (typeof value === 'string') {
        if (PRIVATE_KEY_RE.test(value)) {
          return path;
        }
      } else if (isArray(value)) {
        for (i = value.length - 1; i >= 0; i--) {
          stack.push([path + '[' + i + ']', value[i]]);
        }
      } else if (isObject(value)) {
        prefix = path === '$' ? '' : path + '.';
        children = [];
        for (key in value) {
          if (Object.prototype.hasOwnProperty.call(value, key)) {
            children.push([prefix + '<key>', key]);
            children.push([prefix + key, value[key]]);
          }
        }
        for (i = children.length - 1; i >= 0; i--) {
          stack.push(children[i]);
        }
      }
    }
    return null;
  }

  // --- ids

  // Twin of store/ids.py: the kind of "<prefix>:<parts>" and its name parts (unchecked), or null.
  function idKind(prefix, parts) {
    var named = {account: ['acme_account', 'acme_account_state'], dns: ['dns_provider', null],
      server: ['server', null], credential: ['tls_credential', 'tls_credential_state']};
    if (Object.prototype.hasOwnProperty.call(named, prefix)) {
      if (parts.length === 1) {
        return {kind: named[prefix][0], parts: parts};
      }
      if (parts.length === 2 && parts[1] === 'state' && named[prefix][1] !== null) {
        return {kind: named[prefix][1], parts: [parts[0]]};
      }
    } else if (prefix === 'deploy' && parts.length === 2) {
      return {kind: 'deployment', parts: parts};
    } else if (prefix === 'challenge' && parts.length === 1) {
      return {kind: 'acme_challenge', parts: parts};
    }
    return null;
  }

  // The document type an id demands (its kind) and its parts, or {problem: why it is no certstore id}.
  function parseId(id) {
    var colon = id.indexOf(':');
    var found = colon === -1 ? null : idKind(id.substring(0, colon), id.substring(colon + 1).split(':'));
    var problem, i;
    if (id === 'settings') {
      return {kind: 'settings', parts: []};
    }
    if (id === 'lease:certmgr') {
      return {kind: 'lease', parts: []};
    }
    if (found === null) {
      return {problem: 'expected settings, lease:certmgr, account:<name>[:state], dns:<name>, ' +
        'server:<name>, credential:<name>[:state], challenge:<token> or deploy:<server>:<credential>'};
    }
    if (found.kind === 'acme_challenge') {
      problem = challengeTokenProblem(found.parts[0]);
      return problem === null ? found : {problem: 'the token ' + problem};
    }
    for (i = 0; i < found.parts.length; i++) {
      problem = nameProblem(found.parts[i]);
      if (problem !== null) {
        return {problem: 'the name ' + show(found.parts[i]) + ' ' + problem};
      }
    }
    return found;
  }

  // --- roles

  function isAdmin() {
    var roles = userCtx.roles || [];
    var admins = (secObj && secObj.admins) || {};
    var i;
    if (has(roles, '_admin') || has(roles, 'certstore-admin') ||
        (userCtx.name && has(admins.names || [], userCtx.name))) {
      return true;
    }
    for (i = 0; i < roles.length; i++) {
      if (has(admins.roles || [], roles[i])) {
        return true;
      }
    }
    return false;
  }

  function certmgrMayWrite(id) {
    return /^account:[^:]+:state$/.test(id) || /^credential:[^:]+:state$/.test(id) ||
      id.substring(0, 10) === 'challenge:' || id === 'lease:certmgr';
  }

  function serverMayWrite(server, id) {
    return id === 'server:' + server || id.substring(0, server.length + 8) === 'deploy:' + server + ':';
  }

  function checkWriter(id) {
    var roles = userCtx.roles || [];
    var servers = [];
    var i;
    if (isAdmin()) {
      return;
    }
    if (has(roles, 'certstore-certmgr') && certmgrMayWrite(id)) {
      return;
    }
    for (i = 0; i < roles.length; i++) {
      if (roles[i].substring(0, 7) === 'server:') {
        servers.push(roles[i].substring(7));
        if (serverMayWrite(roles[i].substring(7), id)) {
          return;
        }
      }
    }
    if (!userCtx.name) {
      throw({unauthorized: 'log in to write to the certstore database (anonymous users may not write)'});
    }
    if (servers.length > 0) {
      throw({forbidden: 'server ' + show(servers[0]) + ' may only write server:' + servers[0] +
        ' and deploy:' + servers[0] + ':* documents, not ' + id});
    }
    if (has(roles, 'certstore-certmgr')) {
      throw({forbidden: 'the certmgr may only write account:*:state, credential:*:state, challenge:* and ' +
        'lease:certmgr documents, not ' + id});
    }
    throw({forbidden: 'user ' + show(userCtx.name) + ' may not write ' + id + ': that needs the role ' +
      'certstore-admin (or certstore-certmgr / server:<name> for their own documents)'});
  }

  // --- field reading (twin of _Reader in store/documents.py)

  function Reader(raw, id, prefix) {
    this.raw = raw;
    this.id = id;
    this.prefix = prefix;
  }

  // withValue: quote the offending value in the message (as store/documents.py does when it has one).
  Reader.prototype.fail = function (name, reason, value, withValue) {
    var shown = withValue ? ' ' + show(value) + ':' : '';
    throw({forbidden: this.id + ': ' + this.prefix + name + shown + ' ' + reason});
  };

  Reader.prototype.get = function (name) {
    return Object.prototype.hasOwnProperty.call(this.raw, name) ? this.raw[name] : undefined;
  };

  Reader.prototype.string = function (name, value, rule, maxLength) {
    var problem;
    if (typeof value !== 'string') {
      this.fail(name, 'must be a string', value, true);
    }
    problem = rule ? rule(value) : null;
    if (problem === null && value.length > maxLength) {
      problem = 'is longer than ' + maxLength + ' characters';
    }
    if (problem !== null) {
      this.fail(name, problem, value, true);
    }
    return value;
  };

  Reader.prototype.text = function (name, rule, maxLength) {
    var value = this.get(name);
    return absent(value) ? null : this.string(name, value, rule, maxLength || MAX_TEXT);
  };

  Reader.prototype.requiredText = function (name, rule, maxLength) {
    if (absent(this.get(name))) {
      this.fail(name, 'is required');
    }
    return this.text(name, rule, maxLength);
  };

  Reader.prototype.flag = function (name, required) {
    var value = this.get(name);
    if (absent(value)) {
      if (required) {
        this.fail(name, 'is required');
      }
      return null;
    }
    if (typeof value !== 'boolean') {
      this.fail(name, 'must be true or false', value, true);
    }
    return value;
  };

  Reader.prototype.integer = function (name, low, high) {
    var value = this.get(name);
    var number = asInteger(value);
    if (!absent(value) && (number === null || number < low || number > high)) {
      this.fail(name, 'must be a whole number from ' + low + ' to ' + high, value, true);
    }
  };

  Reader.prototype.mapping = function (name) {
    var value = this.get(name);
    if (absent(value)) {
      return null;
    }
    if (!isObject(value)) {
      this.fail(name, 'must be a JSON object', value, true);
    }
    return value;
  };

  Reader.prototype.sealed = function (name) {
    var value = this.mapping(name);
    var version = value === null ? null : asInteger(value.v);
    if (value !== null && (version === null || version < 1)) {
      this.fail(name, 'must be a sealed envelope: a JSON object with an integer version "v"');
    }
    return value;
  };

  Reader.prototype.refuseUnknown = function (allowed) {
    var key;
    for (key in this.raw) {
      if (Object.prototype.hasOwnProperty.call(this.raw, key) && !has(allowed, key)) {
        this.fail(key, 'is not a known field here (allowed: ' + allowed.slice(0).sort().join(', ') + ')');
      }
    }
    return this;
  };

  Reader.prototype.nested = function (name, allowed) {
    var value = this.mapping(name);
    if (value === null) {
      return null;
    }
    return new Reader(value, this.id, this.prefix + name + '.').refuseUnknown(allowed);
  };

  Reader.prototype.list = function (name, minItems, maxItems) {
    var value = this.get(name);
    if (absent(value) && minItems === 0) {
      return [];
    }
    if (!isArray(value)) {
      this.fail(name, absent(value) ? 'is required' : 'must be a list');
    }
    if (value.length < minItems || value.length > maxItems) {
      this.fail(name, 'must list ' + minItems + ' to ' + maxItems + ' entries, not ' + value.length);
    }
    return value;
  };

  Reader.prototype.texts = function (name, rule, maxItems, minItems) {
    var values = this.list(name, minItems || 0, maxItems);
    var seen = {};
    var i, key;
    for (i = 0; i < values.length; i++) {
      this.string(name + '[' + i + ']', values[i], rule, MAX_TEXT);
    }
    for (i = 0; i < values.length; i++) {
      key = '=' + values[i];
      if (seen.hasOwnProperty(key)) {
        this.fail(name + '[' + i + ']', 'is listed twice (also ' + name + '[' + seen[key] + '])',
          values[i], true);
      }
      seen[key] = i;
    }
    return values;
  };

  Reader.prototype.records = function (name, allowed, maxItems) {
    var values = this.list(name, 0, maxItems);
    var readers = [];
    var reader, i;
    for (i = 0; i < values.length; i++) {
      if (!isObject(values[i])) {
        this.fail(name + '[' + i + ']', 'must be a JSON object', values[i], true);
      }
      reader = new Reader(values[i], this.id, this.prefix + name + '[' + i + '].');
      readers.push(reader.refuseUnknown(allowed));
    }
    return readers;
  };

  Reader.prototype.bothOrNeither = function (first, second) {
    if (absent(this.get(first)) !== absent(this.get(second))) {
      if (absent(this.get(first))) {
        this.fail(first, 'is required when ' + second + ' is set');
      }
      this.fail(second, 'is required when ' + first + ' is set');
    }
  };

  Reader.prototype.ordered = function (earlier, later) {
    var start = this.text(earlier, timestampProblem);
    var end = this.text(later, timestampProblem);
    if (start !== null && end !== null && !(timestampKey(start) < timestampKey(end))) {
      this.fail(later, 'must be later than ' + earlier, end, true);
    }
  };

  // --- the documents (field order = store/documents.py)

  function readActions(r) {
    var revoke;
    if (r === null) {
      return;
    }
    revoke = r.nested('revoke', ['at', 'reason']);
    r.text('renew', timestampProblem);
    if (revoke !== null) {
      revoke.requiredText('at', timestampProblem);
      revoke.text('reason', choiceRule(REASONS));
    }
    r.text('rekey', timestampProblem);
  }

  function readOutcome(r) {
    if (r !== null) {
      r.flag('ok', true);
      r.requiredText('at', timestampProblem);
      r.text('message');
    }
  }

  var validators = {
    settings: function (r) {
      r.text('default_account', nameProblem);
      r.text('default_key_type', choiceRule(KEY_TYPES));
      r.text('default_challenge', choiceRule(CHALLENGES));
      r.integer('renew_before_days', 1, 365);
      r.texts('notify', notifyProblem, MAX_CONTACTS);
    },
    acme_account: function (r) {
      r.requiredText('directory_url', httpsProblem);
      r.texts('contact', contactProblem, MAX_CONTACTS);
      r.flag('tos_agreed', false);
      r.text('eab_kid', eabKidProblem);
      r.sealed('sealed_eab_hmac');
      r.text('rollover', timestampProblem);
      r.bothOrNeither('eab_kid', 'sealed_eab_hmac');
    },
    dns_provider: function (r) {
      r.requiredText('kind', choiceRule(DNS_KINDS));
      r.texts('zones', hostnameRule(false), MAX_HOSTNAMES, 1);
      r.mapping('options');
      r.sealed('sealed_credentials');
    },
    tls_credential: function (r) {
      var hostnames = r.texts('hostnames', hostnameRule(true), MAX_HOSTNAMES, 1);
      var challenge, i;
      r.text('provider', choiceRule(PROVIDERS));
      r.text('account', nameProblem);
      challenge = r.text('challenge', choiceRule(CHALLENGES));
      r.text('key_type', choiceRule(KEY_TYPES));
      r.texts('servers', nameProblem, MAX_SERVERS);
      r.text('keyfile', keyfileProblem);
      r.text('reload_hook', nameProblem);
      r.text('profile', tokenProblem);
      r.text('live_check', endpointProblem);
      readActions(r.nested('actions', ACTIONS));
      if (challenge === 'http-01') {
        for (i = 0; i < hostnames.length; i++) {
          if (hostnames[i].substring(0, 2) === '*.') {
            r.fail('hostnames[' + i + ']', 'a wildcard needs the dns-01 challenge, not "http-01"',
              hostnames[i], true);
          }
        }
      }
    },
    acme_account_state: function (r) {
      r.text('account_url', httpsProblem);
      r.sealed('sealed_key');
      r.text('registered_at', timestampProblem);
      r.sealed('sealed_next_key');
      r.text('status_message');
      r.text('directory_url', httpsProblem);
      r.text('rolled_over', timestampProblem);
    },
    tls_credential_state: function (r) {
      var status = r.requiredText('status', choiceRule(STATUSES));
      var recipients, handled, entries, i;
      r.text('status_message');
      r.text('chain_pem', chainProblem, 65536);
      r.text('not_before', timestampProblem);
      r.text('not_after', timestampProblem);
      r.text('serial', serialProblem);
      r.text('fingerprint_sha256', sha256Problem);
      r.sealed('sealed_key');
      recipients = r.texts('recipients', nameProblem, MAX_SERVERS);
      handled = r.nested('handled_actions', ACTIONS);
      if (handled !== null) {
        for (i = 0; i < ACTIONS.length; i++) {
          handled.text(ACTIONS[i], timestampProblem);
        }
      }
      r.text('next_renewal', timestampProblem);
      entries = r.records('error_history', ['at', 'message'], MAX_ERROR_HISTORY);
      for (i = 0; i < entries.length; i++) {
        entries[i].requiredText('at', timestampProblem);
        entries[i].requiredText('message');
      }
      r.text('rekey_reason');
      r.texts('hostnames', hostnameRule(true), MAX_HOSTNAMES);
      r.text('key_type', choiceRule(KEY_TYPES));
      r.text('account', nameProblem);
      r.text('request_rev', null, MAX_REV);
      r.integer('failures', 0, MAX_FAILURES);
      r.text('next_attempt', timestampProblem);
      r.ordered('not_before', 'not_after');
      if (status === 'issued' || status === 'renew') {
        for (i = 0; i < CERTIFICATE_FIELDS.length; i++) {
          if (absent(r.get(CERTIFICATE_FIELDS[i]))) {
            r.fail(CERTIFICATE_FIELDS[i], 'is required when status is "' + status + '"');
          }
        }
      }
      if (!absent(r.get('sealed_key')) && recipients.length === 0) {
        r.fail('recipients', 'must name the servers the key is sealed for');
      }
    },
    acme_challenge: function (r, parts) {
      r.requiredText('key_authorization', keyAuthorizationRule(parts[0]));
      r.texts('hostnames', hostnameRule(false), MAX_HOSTNAMES, 1);
      r.requiredText('expires', timestampProblem);
      r.text('credential', nameProblem);
    },
    lease: function (r) {
      r.requiredText('holder', nameProblem);
      r.requiredText('acquired_at', timestampProblem);
      r.requiredText('expires', timestampProblem);
      r.ordered('acquired_at', 'expires');
    },
    server: function (r) {
      r.text('public_key', x25519Problem);
      r.text('key_id', keyIdProblem);
      r.texts('roles', nameProblem, MAX_ROLES);
      r.text('heartbeat', timestampProblem);
      r.text('agent_version', null, 64);
      r.text('responder_url', anyUrlProblem);
      r.bothOrNeither('public_key', 'key_id');
    },
    deployment: function (r) {
      r.text('serial', serialProblem);
      r.texts('paths', absolutePathProblem, MAX_PATHS);
      r.text('deployed_at', timestampProblem);
      readOutcome(r.nested('hook_result', OUTCOME_FIELDS));
      readOutcome(r.nested('live_check', OUTCOME_FIELDS));
      r.text('error');
    }
  };

  // --- the checks, in the order store/documents.py validate_document makes them

  var id = newDoc._id;
  var keyPath, parsed, key, r;

  if (typeof id === 'string' && id.substring(0, 8) === '_design/') {
    return; // CouchDB itself lets only database admins write design documents
  }
  checkWriter(String(id));

  keyPath = findPrivateKey(newDoc);
  if (keyPath !== null) {
    throw({forbidden: id + ': ' + keyPath + ' holds a plaintext private key; keys must never be stored in ' +
      'the database unsealed (certstore seals them for each server with access)'});
  }
  if (newDoc._deleted === true) {
    return;
  }
  if (typeof id !== 'string') {
    throw({forbidden: 'a document needs a string _id'});
  }
  r = new Reader(newDoc, id, '');
  for (key in newDoc) {
    if (Object.prototype.hasOwnProperty.call(newDoc, key) && key.charAt(0) === '_' &&
        !has(COUCH_FIELDS, key)) {
      r.fail(key, 'is not allowed: top-level fields starting with _ are reserved by CouchDB');
    }
  }
  parsed = parseId(id);
  if (parsed.problem !== undefined) {
    throw({forbidden: show(id) + ' is not a certstore document id: ' + parsed.problem});
  }
  if (newDoc.type !== parsed.kind) {
    r.fail('type', 'must be "' + parsed.kind + '" for this id', absent(newDoc.type) ? null : newDoc.type,
      true);
  }
  validators[parsed.kind](r, parsed.parts);
  r.text('_rev');
}
