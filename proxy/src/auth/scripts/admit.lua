-- Admits one request against every limit of its key, atomically, on Redis's clock.
--
-- KEYS: one per check. ARGV[1]: the number of checks; then three per check: kind, a, b.
--   g  a request rate (GCRA): a = microseconds per request, b = the window the burst spans
--   t  tokens per minute:      a = microseconds per token,  b = tokens to take now (0: check)
--   q  a daily quota:          a = the quota,               b = the most to hold
-- Nothing is written unless every check passes. Returns {1, remaining, hold, ...} (two per
-- check) or {0, index of the check that refused, microseconds until it would pass}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local minute = 60000000
local new = {}
local out = {1}
for i = 1, n do
  local kind = ARGV[3 * i - 1]
  local a = tonumber(ARGV[3 * i])
  local b = tonumber(ARGV[3 * i + 1])
  if kind == 'g' or kind == 't' then
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    local cost, window = a, b
    if kind == 't' then cost, window = a * b, minute end
    local next = tat + cost
    if next > now + window then
      return {0, i, math.floor(next - now - window)}
    end
    new[i] = next
    out[2 * i] = math.floor((now + window - next) / a)
    out[2 * i + 1] = 0
  else
    local spent = tonumber(redis.call('HGET', KEYS[i], 'spent') or '0')
    local held = tonumber(redis.call('HGET', KEYS[i], 'held') or '0')
    if spent + held >= a then
      return {0, i, 0}
    end
    new[i] = math.min(b, a - spent - held)
    out[2 * i] = a - spent - held
    out[2 * i + 1] = new[i]
  end
end
for i = 1, n do
  local kind = ARGV[3 * i - 1]
  if kind == 'q' then
    redis.call('HINCRBY', KEYS[i], 'held', string.format('%.0f', new[i]))
    redis.call('EXPIRE', KEYS[i], 172800)
  else
    local ttl = math.floor((new[i] - now) / 1000) + 1000
    redis.call('SET', KEYS[i], string.format('%.0f', new[i]), 'PX', string.format('%.0f', ttl))
  end
end
return out
