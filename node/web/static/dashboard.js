// Maintainers' dashboard: live ops per second and peer states (server-sent events).
(function () {
  'use strict';
  var T = JSON.parse(document.getElementById('texts').textContent);
  function t(k) { return T[k] || k; }
  var es = new EventSource('/dashboard/live');
  es.addEventListener('open', function () { document.body.dataset.live = 'open'; });
  es.addEventListener('status', function (e) {
    var s = JSON.parse(e.data);
    document.getElementById('rate').textContent = s.rate.toFixed(1) + ' ' + t('js.opsps');
    (s.peers || []).forEach(function (p) {
      var row = document.getElementById('v-' + p.id);
      if (!row) return;
      var tag = row.querySelector('td.state .tag');
      if (tag) {
        tag.textContent = p.connected ? t('js.connected') : t('js.disconnected');
        tag.className = 'tag ' + (p.connected ? 'good' : 'bad');
      }
      row.className = p.connected ? '' : 'down';
    });
  });
})();
