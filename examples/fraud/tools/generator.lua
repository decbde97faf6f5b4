#!/usr/bin/env luajit
-- Synthetic raw card authorisations for the fraud example; not a detector.
--
--   luajit examples/fraud/generator.lua N [SEED] | build/tide produce auths-raw --json -b ADDR
--
-- Prints exactly N lines {"key": card, "value": {raw authorisation}, "headers": {...}}
-- in authorisation time order, the same lines for the same N and SEED.
--
-- Normal traffic comes from many cards, each in its home country and currency,
-- each paying at most every COOLDOWN_MS and within +-40% of its own typical
-- amount. Those bounds are what let the tests demand zero false alarms: they
-- stay clear of every detector's threshold (amount_spike needs 3x the mean,
-- velocity 5 payments in 10 minutes, new_country a foreign country).
-- Injected on cards with some history, and labelled with the header
-- `synthetic.pattern` so a test or a person can score the pipeline:
--   spike        one payment 8 to 20 times the card's typical amount
--   burst        BURST payments one minute apart
--   new_country  one payment abroad, in the local currency
--   malformed    no card number, an amount that is not a number, or broken JSON
-- The raw records are deliberately messy in the ways normaliser.lua cleans up.
local cjson = require("cjson")

local USAGE = "usage: luajit examples/fraud/generator.lua N [SEED]   (N >= 100)\n"
local N, SEED = tonumber(arg[1]), tonumber(arg[2] or "1")
if not N or N < 100 or N % 1 ~= 0 or not SEED then
  io.stderr:write(USAGE)
  os.exit(2)
end
math.randomseed(SEED)

local START_MS = 1795219200000 -- 2026-11-21T00:00:00Z
local MINUTE = 60 * 1000
local COOLDOWN_MS = 30 * MINUTE
local MAX_EXTRA_GAP_MS = 8 * 60 * MINUTE
local AUTHS_PER_CARD = 25
local HISTORY_BEFORE_FRAUD = 6 -- at least this many payments before a pattern
local BURST = 6
local PATTERNS = { { name = "spike", records = 1 }, { name = "burst", records = BURST },
  { name = "new_country", records = 1 } }

local HOME = {
  { country = "FR", currency = "EUR", merchants = { "Boulangerie Paul", "Carrefour", "SNCF", "Fnac" } },
  { country = "DE", currency = "EUR", merchants = { "Rewe", "Deutsche Bahn", "Lidl", "MediaMarkt" } },
  { country = "ES", currency = "EUR", merchants = { "Mercadona", "Renfe", "El Corte Ingles", "Zara" } },
  { country = "IT", currency = "EUR", merchants = { "Esselunga", "Trenitalia", "Coop", "Autogrill" } },
  { country = "NL", currency = "EUR", merchants = { "Albert Heijn", "NS", "HEMA", "Jumbo" } },
  { country = "GB", currency = "GBP", merchants = { "Tesco", "Pret A Manger", "TfL", "Boots" } },
  { country = "US", currency = "USD", merchants = { "Walmart", "Starbucks", "Target", "Shell" } },
}
-- Never a home country; `rate` turns a typical amount into the local currency.
local ABROAD = {
  { country = "BR", currency = "BRL", rate = 5.5, merchants = { "Lojas Americanas", "Posto Ipiranga" } },
  { country = "TH", currency = "THB", rate = 38, merchants = { "7-Eleven Bangkok", "Central World" } },
  { country = "VN", currency = "VND", rate = 26000, merchants = { "Vinmart", "Highlands Coffee" } },
  { country = "MX", currency = "MXN", rate = 18, merchants = { "OXXO", "Liverpool" } },
}
local SPIKE_MERCHANTS = { "Apple Store", "Louis Vuitton", "Cartier", "Western Union" }
local BURST_MERCHANTS = { "Steam", "Google Play", "Amazon Digital", "Roblox" }
local BAD_AMOUNTS = { "twelve", "12,5O", "N/A", "" }

--- JSON with object keys sorted: cjson follows table order, which differs
--- from run to run, and the same seed must print the same bytes.
local function encode(v)
  if type(v) ~= "table" then return cjson.encode(v) end
  local keys, parts = {}, {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  for i, k in ipairs(keys) do parts[i] = cjson.encode(k) .. ":" .. encode(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function pick(list) return list[math.random(#list)] end
local function cents(x) return math.floor(x * 100 + 0.5) / 100 end
--- An amount near `typical`: within +-40%.
local function usual(typical) return cents(typical * (0.6 + 0.8 * math.random())) end

local function shuffle(list)
  for i = #list, 2, -1 do
    local j = math.random(i)
    list[i], list[j] = list[j], list[i]
  end
end

local cards, used = {}, {}
local function new_card()
  local pan
  repeat
    local digits = { math.random(4, 5) }
    for i = 2, 16 do digits[i] = math.random(0, 9) end
    pan = table.concat(digits)
  until not used[pan]
  used[pan] = true
  local card = { pan = pan, home = pick(HOME), typical = cents(5 + 115 * math.random()) }
  cards[#cards + 1] = card
  return card
end

--- ISO 8601 in UTC, with milliseconds only when there are some.
local function iso8601(ms)
  local frac = ms % 1000
  return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(ms / 1000))
    .. (frac ~= 0 and (".%03d"):format(frac) or "") .. "Z"
end

--- The raw authorisation as some upstream system might send it: the same
--- facts in one of several shapes.
local function raw_auth(card, t, amount, currency, country, merchant)
  local pan = card.pan
  local style = math.random(3)
  if style == 1 then
    pan = (pan:gsub("(%d%d%d%d)", "%1-")):sub(1, -2)
  elseif style == 2 then
    pan = (pan:gsub("(%d%d%d%d)", "%1 ")):sub(1, -2)
  end
  local v = {
    card_number = pan,
    amt = math.random() < 0.5 and ("%.2f"):format(amount) or amount,
    currency = math.random() < 0.5 and currency:lower() or currency,
    ts = math.random() < 0.5 and iso8601(t) or t,
  }
  local c = math.random() < 0.5 and country:lower() or country
  if math.random() < 0.8 then
    v.merchant = { name = merchant, country = c }
  else
    v.merchant, v.merchant_country = merchant, c
  end
  return v
end

local records, seq = {}, 0
local function add(t, key, value, pattern)
  seq = seq + 1
  records[#records + 1] = {
    t = t, seq = seq, key = key, value = value,
    headers = pattern and { ["synthetic.pattern"] = pattern } or nil,
  }
end
local function by_time(a, b)
  if a.t ~= b.t then return a.t < b.t end
  return a.seq < b.seq
end

-- Plan: malformed and pattern records first, normal traffic fills the rest.
local n_malformed = math.max(1, math.floor(N / 200))
local n_each = math.max(1, math.floor(N / 500))
local n_pattern_records = 0
for _, p in ipairs(PATTERNS) do n_pattern_records = n_pattern_records + n_each * p.records end
local n_normal = N - n_malformed - n_pattern_records
local n_cards = math.max(8, math.floor(n_normal / AUTHS_PER_CARD))

-- Each card's payment times, twice as many as needed; the earliest across all
-- cards are kept, so every card keeps a prefix of its own history.
local slots = {}
local per_card = math.ceil(2 * n_normal / n_cards) + 10
for _ = 1, n_cards do
  local card = new_card()
  local t = START_MS + math.random(0, MAX_EXTRA_GAP_MS)
  for _ = 1, per_card do
    seq = seq + 1
    slots[#slots + 1] = { t = t, seq = seq, card = card }
    t = t + COOLDOWN_MS + math.random(0, MAX_EXTRA_GAP_MS)
  end
end
table.sort(slots, by_time)

local history = {} -- card -> its kept payment times, in order
local n_kept = 0
local function keep(n)
  while n_kept < n do
    n_kept = n_kept + 1
    local s = slots[n_kept]
    local card = s.card
    history[card] = history[card] or {}
    table.insert(history[card], s.t)
    add(s.t, card.pan, raw_auth(card, s.t, usual(card.typical), card.home.currency,
      card.home.country, pick(card.home.merchants)))
  end
end
keep(n_normal)

-- Patterns go to distinct cards, each right after one of its payments (the
-- next one is at least COOLDOWN_MS later, so a pattern never overlaps it).
local eligible = {}
for _, card in ipairs(cards) do
  if history[card] and #history[card] >= HISTORY_BEFORE_FRAUD then eligible[#eligible + 1] = card end
end
shuffle(eligible)

local inject = {
  spike = function(card, t)
    local home = card.home
    add(t + 5 * MINUTE, card.pan, raw_auth(card, t + 5 * MINUTE,
      cents(card.typical * (8 + 12 * math.random())), home.currency, home.country,
      pick(SPIKE_MERCHANTS)), "spike")
  end,
  burst = function(card, t)
    local home = card.home
    for j = 1, BURST do
      local tj = t + j * MINUTE
      add(tj, card.pan, raw_auth(card, tj, usual(card.typical), home.currency, home.country,
        pick(BURST_MERCHANTS)), "burst")
    end
  end,
  new_country = function(card, t)
    local place = pick(ABROAD)
    add(t + 5 * MINUTE, card.pan, raw_auth(card, t + 5 * MINUTE,
      usual(card.typical * place.rate), place.currency, place.country, pick(place.merchants)),
      "new_country")
  end,
}

local next_card, missing = 1, 0
for _, p in ipairs(PATTERNS) do
  for _ = 1, n_each do
    local card = eligible[next_card]
    if card then
      next_card = next_card + 1
      local times = history[card]
      inject[p.name](card, times[math.random(HISTORY_BEFORE_FRAUD, #times)])
    else
      missing = missing + p.records
    end
  end
end
if missing > 0 then
  io.stderr:write(("generator: too few cards with history; %d pattern records replaced by normal ones\n")
    :format(missing))
  keep(n_normal + missing)
end

for i = 1, n_malformed do
  local card = pick(cards)
  local t = records[math.random(#records)].t + 1000
  local value = raw_auth(card, t, usual(card.typical), card.home.currency, card.home.country,
    pick(card.home.merchants))
  local kind, key = i % 3, card.pan
  if kind == 1 then
    value.card_number, key = nil, cjson.null
  elseif kind == 2 then
    value.amt = pick(BAD_AMOUNTS)
  else
    value = encode(value):sub(1, 30) -- cut short: not JSON any more
  end
  add(t, key, value, "malformed")
end

table.sort(records, by_time)
local out = {}
for i, r in ipairs(records) do
  out[i] = encode({ key = r.key, value = r.value, headers = r.headers })
end
out[#out + 1] = ""
io.write(table.concat(out, "\n"))
