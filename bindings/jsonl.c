/*
 * jsonl.c: JSON-lines records (see jsonl.h), decoded by lua-cjson.
 */
#include "jsonl.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "lua_call.h"

struct tide_jsonl {
    lua_State *L;
    int fn_ref;
    tide_lua_error_t err;
    const char **names, **values;
    size_t *lens;
    int cap;
};

static const char parse_src[] =
    "local cjson = require('cjson')\n"
    "local null = cjson.null\n"
    "local function text(v)\n"
    "  if v == nil or v == null then return nil end\n"
    "  if type(v) == 'string' then return v end\n"
    "  return cjson.encode(v)\n"
    "end\n"
    "return function(line)\n"
    "  local ok, t = pcall(cjson.decode, line)\n"
    "  if not ok then error('invalid JSON: ' .. tostring(t), 0) end\n"
    "  if type(t) ~= 'table' then error('each line must be a JSON object', 0) end\n"
    "  for k in pairs(t) do\n"
    "    if k ~= 'key' and k ~= 'value' and k ~= 'headers' and k ~= 'partition' and k ~= 'timestamp' then\n"
    "      error('unknown field \"' .. tostring(k) .. '\" (key, value, headers, partition, timestamp)', 0)\n"
    "    end\n"
    "  end\n"
    "  local h = {}\n"
    "  if type(t.headers) == 'table' then\n"
    "    for name, v in pairs(t.headers) do h[#h + 1] = tostring(name); h[#h + 1] = text(v) or '' end\n"
    "  end\n"
    "  local p = tonumber(t.partition) or -1\n"
    "  local ts = tonumber(t.timestamp)\n"
    "  if ts == nil then ts = -1\n"
    "  elseif ts < 0 then error('timestamp must be ms since the epoch', 0) end\n"
    "  return text(t.key), text(t.value), p, h, ts\n"
    "end\n";

tide_jsonl_t *tide_jsonl_new(char **errp) {
    tide_jsonl_t *j = calloc(1, sizeof(*j));
    j->L = luaL_newstate();
    luaL_openlibs(j->L);
    if (luaL_loadbuffer(j->L, parse_src, sizeof(parse_src) - 1, "=jsonl") ||
        tide_lua_pcall(j->L, 0, 1, &j->err)) {
        *errp = strdup(j->err.message ? j->err.message : "cannot load the JSON parser");
        tide_jsonl_free(j);
        return NULL;
    }
    j->fn_ref = luaL_ref(j->L, LUA_REGISTRYINDEX);
    return j;
}

static const char *str_at(lua_State *L, int idx, int32_t *len) {
    size_t l;
    const char *s = lua_tolstring(L, idx, &l);
    *len = s ? (int32_t)l : -1;
    return s;
}

int tide_jsonl_parse(tide_jsonl_t *j, const char *line, size_t len, tide_jsonl_rec_t *out,
                     char **errp) {
    lua_State *L = j->L;
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, j->fn_ref);
    lua_pushlstring(L, line, len);
    if (tide_lua_pcall(L, 1, 5, &j->err)) {
        *errp = strdup(j->err.message ? j->err.message : "invalid line");
        return -1;
    }
    /* Results stay on the stack until the next parse: pointers stay valid. */
    out->key = str_at(L, 1, &out->key_len);
    out->value = str_at(L, 2, &out->value_len);
    out->partition = (int32_t)lua_tointeger(L, 3);
    out->timestamp = (int64_t)lua_tonumber(L, 5);
    int nh = (int)lua_objlen(L, 4) / 2;
    if (nh > j->cap) {
        j->names = realloc(j->names, (size_t)nh * sizeof(char *));
        j->values = realloc(j->values, (size_t)nh * sizeof(char *));
        j->lens = realloc(j->lens, (size_t)nh * sizeof(size_t));
        j->cap = nh;
    }
    for (int i = 0; i < nh; i++) {
        lua_rawgeti(L, 4, 2 * i + 1);
        lua_rawgeti(L, 4, 2 * i + 2);
        j->names[i] = lua_tostring(L, -2);
        j->values[i] = lua_tolstring(L, -1, &j->lens[i]);
        lua_pop(L, 2); /* still referenced by the table at 4 */
    }
    out->n_headers = nh;
    out->header_names = j->names;
    out->header_values = j->values;
    out->header_lens = j->lens;
    return 0;
}

void tide_jsonl_free(tide_jsonl_t *j) {
    if (!j) return;
    if (j->L) lua_close(j->L);
    tide_lua_error_free(&j->err);
    free(j->names);
    free(j->values);
    free(j->lens);
    free(j);
}
