"""The Lua scripts of :mod:`gateway.state.redis`: each step is one script, so it is atomic across
replicas and one round trip. Times are the server's (``TIME``), in integer microseconds, so that
replicas with skewed clocks agree and every number stays exact in Lua's doubles (Redis passes a
Lua number on as ``%.17g``); what a script returns is relative (microseconds from now), because Lua
numbers come back as integers and ``tostring`` keeps only 14 digits.

One key's keys (hash-tagged by its name, so one Cluster slot holds them)::

    req     ZSET  lease -> admitted at                 the requests log
    tokens  ZSET  "lease:tokens" -> logged at          the tokens log,
                  "sum" -> minus the sum of the others   and its sum (a new name for a new
                                                         shape: the old ``tok`` expires alone)
    cc      ZSET  lease -> expires at                  the concurrency leases

The tokens log keeps its sum in itself (a negative score sorts first and no time is <= 0), so the
two can never expire apart, and an entry names its own tokens: no other key to read or write.

Cheap is the point: a script is on every limited request's path, and this machine's loopback
round trip grows by ~0.1 ms once the server is busy past ~10 us, so each ``redis.call`` (1 to
4 us) counts. ADMIT makes 16 calls for a key with every limit and a budget, SETTLE 8.
"""

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

# KEYS: req, tok, cc, then each budget's counter for its current period
# ARGV: rpm, tpm, max_concurrent (-1: no such limit), window, lease ttl (us), keep log, keep
#       leases (ms), then per budget: cap, 1 if charged the estimate, expire at (s); last the
#       lease and the estimate (so all before them is packed once per key and period)
# Returns {0, requests left, requests reset, tokens left, tokens reset} or a refusal:
#   {1} concurrency, {2, budget index (1-based)}, {3, retry after}, {4, retry after}
ADMIT = _NOW + """
local req, tok, cc = KEYS[1], KEYS[2], KEYS[3]
local lease, estimate = ARGV[#ARGV - 1], tonumber(ARGV[#ARGV])
local rpm, tpm, most = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local keep, keep_cc = tonumber(ARGV[6]), tonumber(ARGV[7])
-- a log is only read under its limit, so one without its limit need not expire now
local edge = now - window
-- leases of replicas that died are swept only when they would count
if most >= 0 and redis.call('ZCARD', cc) >= most then
  redis.call('ZREMRANGEBYSCORE', cc, '-inf', now)
  if redis.call('ZCARD', cc) >= most then return {1} end
end
local counted = {}
for i = 4, #KEYS do
  local at = 8 + (i - 4) * 3
  counted[i] = redis.call('GET', KEYS[i])
  if tonumber(counted[i] or '0') >= tonumber(ARGV[at]) then return {2, i - 3} end
end
local n = 0
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', req, '-inf', edge)
  n = redis.call('ZCARD', req)
  if n >= rpm then
    local must_leave = redis.call('ZRANGE', req, n - rpm, n - rpm, 'WITHSCORES')
    return {3, tonumber(must_leave[2]) + window - now}
  end
end
local taken, sum = estimate, 0
if tpm >= 0 then
  if taken > tpm then taken = tpm end
  local gone = redis.call('ZRANGEBYSCORE', tok, 1, edge)
  sum = -tonumber(redis.call('ZSCORE', tok, 'sum') or '0')
  if #gone > 0 then
    for i = 1, #gone do sum = sum - tonumber(string.match(gone[i], ':(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', tok, 1, edge)
  end
  if sum + taken > tpm then
    if #gone > 0 then redis.call('ZADD', tok, -sum, 'sum') end
    -- when the entry leaves whose leaving leaves room for this one (rank 0 is the sum)
    local room, held, from = tpm - taken, sum, 1
    while true do
      local entries = redis.call('ZRANGE', tok, from, from + 255, 'WITHSCORES')
      if #entries == 0 then return {4, window} end
      for i = 1, #entries, 2 do
        held = held - tonumber(string.match(entries[i], ':(%d+)$'))
        if held <= room then return {4, tonumber(entries[i + 1]) + window - now} end
      end
      from = from + 256
    end
  end
end

local out = {0, 0, 0, 0, 0}
if most >= 0 then
  redis.call('ZADD', cc, now + ttl, lease)
  redis.call('PEXPIRE', cc, keep_cc)
end
if rpm >= 0 then
  redis.call('ZADD', req, now, lease)
  redis.call('PEXPIRE', req, keep)
  out[2] = rpm - n - 1
  out[3] = n == 0 and window or tonumber(redis.call('ZRANGE', req, 0, 0, 'WITHSCORES')[2]) + window - now
end
if tpm >= 0 then
  sum = sum + taken
  redis.call('ZADD', tok, now, lease .. ':' .. string.format('%d', taken), -sum, 'sum')
  redis.call('PEXPIRE', tok, keep)
  out[4] = math.max(tpm - sum, 0)
  out[5] = tonumber(redis.call('ZRANGE', tok, 1, 1, 'WITHSCORES')[2]) + window - now
end
for i = 4, #KEYS do
  local at = 8 + (i - 4) * 3
  if ARGV[at + 1] == '1' then
    if counted[i] then
      redis.call('INCRBYFLOAT', KEYS[i], estimate)
    else
      redis.call('SET', KEYS[i], estimate, 'EXAT', ARGV[at + 2])
    end
  end
end
return out
"""

# KEYS: req, tok, cc, then the budget counters to charge
# ARGV: lease, tokens it was admitted on in the log (0: none), tokens to log (0: none),
#       keep log (ms), 1 if undone (the request went nowhere: out of the requests log too), then
#       per counter: amount, expire at (s)
SETTLE = _NOW + """
local tok, lease = KEYS[2], ARGV[1]
local taken, tokens, keep = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREM', KEYS[3], lease)
if ARGV[5] == '1' then redis.call('ZREM', KEYS[1], lease) end
if taken ~= '0' then
  -- its estimate out of the log, unless it left the window already; what it used in, as of now
  local change = tokens
  if redis.call('ZREM', tok, lease .. ':' .. taken) == 1 then change = change - tonumber(taken) end
  redis.call('ZINCRBY', tok, -change, 'sum')
  if tokens > 0 then redis.call('ZADD', tok, now, lease .. ':' .. tokens) end
  redis.call('PEXPIRE', tok, keep)
end
for i = 4, #KEYS do
  local at = 6 + (i - 4) * 2
  redis.call('INCRBYFLOAT', KEYS[i], ARGV[at])
  redis.call('EXPIREAT', KEYS[i], ARGV[at + 1])
end
return 0
"""

# KEYS: cc; ARGV: lease ttl (us), keep leases (ms), then the leases still running
REFRESH = _NOW + """
local until_ = now + tonumber(ARGV[1])
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], 'XX', until_, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
"""

# KEYS: the ejections HASH (provider -> ejected until, us); ARGV: provider, for how long (us)
EJECT = _NOW + """
local keep = math.floor(tonumber(ARGV[2]) / 1000) + 1000
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
return 0
"""

# KEYS: the ejections HASH. Returns {provider, microseconds left, ...}, the past ones dropped.
EJECTIONS = _NOW + """
local all, out = redis.call('HGETALL', KEYS[1]), {}
for i = 1, #all, 2 do
  local left = tonumber(all[i + 1]) - now
  if left > 0 then
    out[#out + 1] = all[i]
    out[#out + 1] = left
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return out
"""

# KEYS: the response's HASH; ARGV: owner, response, conversation, ttl (ms)
PUT_RESPONSE = """
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'response', ARGV[2], 'conversation', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 0
"""

# KEYS: the response's HASH; ARGV: owner. Returns 1 if it was there and the owner's.
DELETE_RESPONSE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
