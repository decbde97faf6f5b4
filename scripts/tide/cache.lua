--- A bounded map for detector state held in Lua: `tide.cache(capacity)`.
---
--- Keys live in two generations. A key written, or read with get(), goes to
--- the young one; when the young generation holds `capacity` keys it becomes
--- the old one and the previous old one is forgotten. So at most about
--- 2 * capacity keys are held, and only keys untouched for a whole generation
--- are forgotten. Cheap: no per-key bookkeeping beyond two tables.
---
---   local cards = tide.cache(100000)
---   local profile = cards:get_or_create(card, function() return { n = 0 } end)
local M = {}

---@class tide.Cache
---@field capacity integer
---@field package young table the keys written or read this generation
---@field package old table the previous generation's
---@field package n integer keys in the young generation
local Cache = {}
Cache.__index = Cache
Cache.__metatable = false -- shared by every detector: not theirs to change

---@param capacity integer keys per generation (> 0)
---@return tide.Cache
function M.new(capacity)
  if type(capacity) ~= "number" or capacity < 1 then
    error("bad argument #1 to 'cache' (a capacity of at least 1 expected)", 2)
  end
  return setmetatable({ capacity = capacity, young = {}, old = {}, n = 0 }, Cache)
end

local function promote(self, key, value)
  if self.n >= self.capacity then
    self.young, self.old, self.n = {}, self.young, 0
  end
  self.young[key] = value
  self.n = self.n + 1
end

--- The value of `key`, or nil; a value found is kept young.
function Cache:get(key)
  local v = self.young[key]
  if v ~= nil then return v end
  v = self.old[key]
  if v ~= nil then promote(self, key, v) end
  return v
end

--- The value of `key`, or nil, without keeping it young.
function Cache:peek(key)
  local v = self.young[key]
  if v ~= nil then return v end
  return self.old[key]
end

--- Set `key` to `value` (young).
function Cache:set(key, value)
  if self.young[key] ~= nil then
    self.young[key] = value
  else
    promote(self, key, value)
  end
end

--- The value of `key`, made with make() when absent; kept young.
---@param make fun(): any
function Cache:get_or_create(key, make)
  local v = self:get(key)
  if v == nil then
    v = make()
    promote(self, key, v)
  end
  return v
end

return M
