// Point of sale: a cart, cards from the node's reader (server-sent events),
// from a keyboard-wedge reader or typed, and the cash desk. No framework.
(function () {
  'use strict';
  var root = document.getElementById('pos');
  if (!root) return;
  var csrf = root.dataset.csrf, lang = root.dataset.lang, cur = root.dataset.currency;
  var T = JSON.parse(document.getElementById('texts').textContent);
  function t(k) { return T[k] || k; }
  var nf = new Intl.NumberFormat(lang === 'fr' ? 'fr-FR' : 'en-GB', { style: 'currency', currency: cur });
  function money(c) { return nf.format(c / 100); }
  function $(id) { return document.getElementById(id); }
  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }
  function newKey() {
    if (window.crypto && crypto.randomUUID) return 'pos-' + crypto.randomUUID();
    var a = new Uint8Array(16); crypto.getRandomValues(a);
    return 'pos-' + Array.prototype.map.call(a, function (b) { return ('0' + b.toString(16)).slice(-2); }).join('');
  }
  function parseAmount(s) {
    s = String(s || '').replace(/[\s\u00a0\u202f€$£]/g, '').replace(',', '.');
    if (!/^\d{1,7}(\.\d{1,2})?$/.test(s)) return 0;
    return Math.round(parseFloat(s) * 100);
  }

  async function api(method, path, body) {
    var opt = { method: method, credentials: 'same-origin', headers: { 'X-CSRF-Token': csrf } };
    if (body !== undefined) { opt.headers['Content-Type'] = 'application/json'; opt.body = JSON.stringify(body); }
    var r = await fetch(path, opt);
    var j = {};
    try { j = await r.json(); } catch (e) { /* not JSON */ }
    return { ok: r.ok, status: r.status, body: j };
  }
  // apiRetry sends a write again, with the same idempotency key, after a
  // network error or a "retry" answer: the node charges it once.
  async function apiRetry(method, path, body) {
    for (var i = 0; ; i++) {
      try {
        var res = await api(method, path, body);
        var code = res.body && res.body.error;
        if (res.status === 503 && (code === 'timeout' || code === 'unavailable' || code === 'catching_up') && i < 3) {
          await sleep(400 * (i + 1)); continue;
        }
        return res;
      } catch (e) {
        if (i >= 3) return { ok: false, status: 0, body: { error: 'network' } };
        await sleep(300 * (i + 1));
      }
    }
  }

  // The cart.
  var cart = []; // {name, price, qty}
  function total() { return cart.reduce(function (s, l) { return s + l.price * l.qty; }, 0); }
  function label() {
    var s = cart.map(function (l) { return (l.qty > 1 ? l.qty + '× ' : '') + l.name; }).join(', ');
    return s.length > 100 ? s.slice(0, 99) + '…' : s;
  }
  function add(name, price) {
    var l = cart.find(function (x) { return x.name === name && x.price === price; });
    if (l) l.qty++; else cart.push({ name: name, price: price, qty: 1 });
    render();
  }
  function render() {
    var ul = $('cart-lines');
    ul.textContent = '';
    cart.forEach(function (l, i) {
      var li = document.createElement('li');
      var minus = document.createElement('button'); minus.type = 'button'; minus.textContent = '−';
      minus.setAttribute('aria-label', t('js.less') + ' ' + l.name);
      minus.onclick = function () { l.qty--; if (l.qty <= 0) cart.splice(i, 1); render(); };
      var plus = document.createElement('button'); plus.type = 'button'; plus.textContent = '+';
      plus.setAttribute('aria-label', t('js.more') + ' ' + l.name);
      plus.onclick = function () { l.qty++; render(); };
      var name = document.createElement('span'); name.className = 'name'; name.textContent = l.qty + ' × ' + l.name;
      var amt = document.createElement('span'); amt.textContent = money(l.price * l.qty);
      li.append(minus, name, plus, amt);
      ul.append(li);
    });
    $('total').textContent = money(total());
    $('charge').disabled = total() <= 0;
  }
  document.querySelectorAll('.product').forEach(function (b) {
    b.addEventListener('click', function () {
      if (!$('result').hidden && !pending) hideResult();
      add(b.dataset.name, parseInt(b.dataset.price, 10));
    });
  });
  $('custom-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var c = parseAmount($('custom-amount').value);
    if (c > 0) { add(t('js.custom'), c); $('custom-amount').value = ''; }
  });
  $('clear').addEventListener('click', function () { cart = []; render(); });
  $('charge').addEventListener('click', function () {
    if (total() <= 0) return;
    waiting = true;
    $('waiting-amount').textContent = money(total());
    $('waiting').hidden = false;
    $('card-input').focus();
  });
  $('cancel-wait').addEventListener('click', function () { waiting = false; $('waiting').hidden = true; });

  // Cards: taps pushed by the node, keyboard-wedge readers, typed ids.
  var pending = null; // the payment in flight
  var waiting = false;
  async function resolve(input) {
    var res = await api('GET', '/pos/api/resolve?input=' + encodeURIComponent(input));
    return res.ok ? res.body.card : null;
  }
  async function onCard(input, fromTap, stamp) {
    var card = fromTap ? input : await resolve(input);
    if (!card) { showInfo(t('js.badcard')); return; }
    if (total() > 0 && !pending && !approvedShown) { pay(card, stamp); return; }
    if (pending) { // a second tap while charging: the sale is charged once
      if (pending.card === card) showInfo(card + ': ' + t('js.charging'));
      return;
    }
    cardInfo(card);
  }
  var approvedShown = false;
  $('card-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var v = $('card-input').value.trim();
    $('card-input').value = '';
    if (v) onCard(v, false);
  });
  // A keyboard-wedge reader types fast and ends with Enter, wherever the focus is.
  var wedge = '', wedgeAt = 0;
  document.addEventListener('keydown', function (e) {
    var tag = (e.target && e.target.tagName) || '';
    if (tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT') return;
    var now = Date.now();
    if (now - wedgeAt > 80) wedge = '';
    wedgeAt = now;
    if (e.key === 'Enter' && wedge.length >= 8) { e.preventDefault(); var v = wedge; wedge = ''; onCard(v, false); return; }
    if (e.key.length === 1 && /[0-9a-fA-F:\-]/.test(e.key)) wedge += e.key;
  });

  function showInfo(text) { $('card-info').textContent = text; }
  async function cardInfo(card) {
    var res = await api('GET', '/pos/api/cards/' + encodeURIComponent(card) + '?limit=1');
    ['topup-card', 'refund-card', 'block-card', 'link-card'].forEach(function (id) { $(id).value = card; });
    ['topup-form', 'refund-form', 'block-form'].forEach(function (id) { delete $(id).dataset.key; });
    if (!res.ok) { showInfo(card + ': ' + reasonText(res.body)); return; }
    showInfo(card + ': ' + t('js.balance') + ' ' + money(res.body.balance_cents) + (res.body.blocked ? ' · ' + t('js.blocked') : ''));
  }

  function reasonText(b) {
    var code = (b && b.error) || 'network';
    var key = 'js.err.' + code;
    return T[key] || (b && b.message) || code;
  }
  var undoTimer = null;
  async function pay(card, stamp) {
    var amount = total();
    pending = { key: newKey(), card: card, amount: amount };
    $('waiting').hidden = true; waiting = false;
    var body = { card: card, amount_cents: amount, idempotency_key: pending.key, label: label() };
    if (stamp) body.stamp = stamp;
    var res = await apiRetry('POST', '/pos/api/payments', body);
    var sale = pending;
    if (res.ok) {
      approvedShown = true;
      cart = []; render();
      showResult(true, t('js.approved'), money(sale.amount) + ' · ' + card, t('js.newbalance') + ' ' + money(res.body.balance_cents));
      var undo = $('undo');
      undo.hidden = false;
      undo.onclick = function () { doUndo(res.body.op_id); };
      clearTimeout(undoTimer);
      undoTimer = setTimeout(function () { undo.hidden = true; }, 60000);
      loadSales();
    } else {
      var reason = reasonText(res.body), bal = '';
      if (res.body.error === 'insufficient_funds' || res.body.error === 'offline_cap_exceeded') {
        var info = await api('GET', '/pos/api/cards/' + encodeURIComponent(card) + '?limit=1');
        if (info.ok) bal = t('js.balance') + ' ' + money(info.body.balance_cents);
      }
      if (res.body.error === 'offline_cap_exceeded' && typeof res.body.allowed_cents === 'number') {
        reason += ' ' + t('js.allowed') + ' ' + money(res.body.allowed_cents) + '.';
      }
      showResult(false, t('js.refused'), reason, bal);
      $('undo').hidden = true;
    }
    pending = null;
  }
  async function doUndo(op) {
    var res = await apiRetry('POST', '/pos/api/undo/' + encodeURIComponent(op), {});
    $('undo').hidden = true;
    if (res.ok) showResult(true, t('js.undone'), '', t('js.newbalance') + ' ' + money(res.body.balance_cents));
    else showResult(false, t('js.undofailed'), reasonText(res.body), '');
    loadSales();
  }
  function showResult(ok, title, reason, balance) {
    var r = $('result');
    r.className = 'result ' + (ok ? 'approved' : 'refused');
    $('result-title').textContent = title;
    $('result-reason').textContent = reason;
    $('result-balance').textContent = balance;
    r.hidden = false;
    $('next').focus();
  }
  function hideResult() { $('result').hidden = true; approvedShown = false; }
  $('next').addEventListener('click', hideResult);
  document.addEventListener('keydown', function (e) { if (e.key === 'Escape') { hideResult(); $('waiting').hidden = true; waiting = false; } });

  // The cash desk. A form keeps its idempotency key until it succeeds or
  // is edited, so a double click or a resend after an error does it once.
  function formKey(form) {
    if (!form.dataset.key) form.dataset.key = newKey();
    return form.dataset.key;
  }
  ['topup-form', 'refund-form', 'block-form'].forEach(function (id) {
    var f = $(id);
    f.addEventListener('input', function () { delete f.dataset.key; });
  });
  var deskBusy = false;
  async function deskSubmit(form, run) {
    if (deskBusy) return;
    deskBusy = true;
    try { if (await run(formKey(form))) delete form.dataset.key; } finally { deskBusy = false; }
  }
  function deskMsg(ok, text) { var m = $('desk-msg'); m.className = ok ? 'ok' : 'alert'; m.textContent = text; }
  async function deskCard(id) { var c = await resolve($(id).value); if (!c) deskMsg(false, t('js.badcard')); return c; }
  $('topup-form').addEventListener('submit', function (e) {
    e.preventDefault();
    deskSubmit(this, async function (key) {
      var card = await deskCard('topup-card'); if (!card) return false;
      var amt = parseAmount($('topup-amount').value); if (!amt) { deskMsg(false, t('js.badamount')); return false; }
      var res = await apiRetry('POST', '/pos/api/topups', { card: card, amount_cents: amt, method: $('topup-method').value, idempotency_key: key });
      if (!res.ok) { deskMsg(false, reasonText(res.body)); return false; }
      deskMsg(true, t('js.toppedup') + ' ' + money(amt) + ' · ' + t('js.newbalance') + ' ' + money(res.body.balance_cents));
      $('topup-amount').value = '';
      return true;
    });
  });
  $('refund-form').addEventListener('submit', function (e) {
    e.preventDefault();
    deskSubmit(this, async function (key) {
      var card = await deskCard('refund-card'); if (!card) return false;
      var amt = parseAmount($('refund-amount').value); if (!amt) { deskMsg(false, t('js.badamount')); return false; }
      var res = await apiRetry('POST', '/pos/api/refunds', { card: card, amount_cents: amt, reason: $('refund-reason').value, idempotency_key: key });
      if (!res.ok) { deskMsg(false, reasonText(res.body)); return false; }
      deskMsg(true, t('js.refunded') + ' ' + money(amt) + ' · ' + t('js.newbalance') + ' ' + money(res.body.balance_cents));
      $('refund-amount').value = '';
      return true;
    });
  });
  $('block-form').addEventListener('submit', function (e) {
    e.preventDefault();
    deskSubmit(this, async function (key) {
      var card = await deskCard('block-card'); if (!card) return false;
      var res = await apiRetry('POST', '/pos/api/cards/' + encodeURIComponent(card) + '/block', { reason: $('block-reason').value, idempotency_key: key });
      if (!res.ok) { deskMsg(false, reasonText(res.body)); return false; }
      deskMsg(true, t('js.blockedok') + ' ' + card);
      return true;
    });
  });
  $('link-form').addEventListener('submit', async function (e) {
    e.preventDefault();
    var card = await deskCard('link-card'); if (!card) return;
    var res = await api('POST', '/pos/api/cards/' + encodeURIComponent(card) + '/holder-token');
    var out = $('link-out'); out.textContent = '';
    if (!res.ok) { deskMsg(false, reasonText(res.body)); return; }
    var a = document.createElement('a'); a.href = res.body.url; a.textContent = location.origin + res.body.url; a.id = 'holder-link';
    var img = document.createElement('img'); img.src = res.body.url + '/qr.png'; img.alt = t('js.qr');
    out.append(a, img);
  });

  // The session's sales.
  async function loadSales() {
    var res = await api('GET', '/pos/api/sales');
    if (!res.ok) return;
    var tb = $('sales'); tb.textContent = '';
    (res.body.sales || []).forEach(function (s) {
      var tr = document.createElement('tr');
      var when = new Date(s.at);
      [when.toLocaleTimeString(lang), s.card, (s.label || '') + (s.undone ? ' (' + t('js.undone') + ')' : ''), money(s.amount_cents)].forEach(function (v, i) {
        var td = document.createElement('td'); td.textContent = v; if (i === 3) td.className = 'num'; tr.append(td);
      });
      tb.append(tr);
    });
  }

  // Taps and the venue's sync state, pushed by the node.
  function banner(st) {
    var b = $('iso-banner');
    if (st.isolated) { b.textContent = st.text; b.hidden = false; } else { b.hidden = true; }
  }
  var es = new EventSource('/pos/stream');
  es.addEventListener('open', function () { root.dataset.stream = 'open'; });
  es.addEventListener('error', function () { root.dataset.stream = 'closed'; });
  // Several tills on one node: each follows its own reader (?reader=NAME).
  var myReader = new URLSearchParams(location.search).get('reader');
  es.addEventListener('tap', function (e) {
    var tp = JSON.parse(e.data);
    if (myReader && tp.reader !== myReader) return;
    onCard(tp.card, true, tp.stamp);
  });
  es.addEventListener('state', function (e) { banner(JSON.parse(e.data)); });
  render();
  loadSales();
})();
