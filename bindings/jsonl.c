/*
 * jsonl.c: JSON-lines records (see jsonl.h), parsed by scripts/tide/jsonl.lua
 * (embedded in the binary, run in a private Lua state) with lua-cjson. It
 * owns that state and the header arrays it hands out; it never produces.
 */
#include "jsonl.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
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

/* The embedded scripts/tide/jsonl.lua (module tide.jsonl), or NULL. */
static const tide_embedded_t *parser_script(void) {
    for (const tide_embedded_t *e = tide_embedded; e->module; e++)
        if (!strcmp(e->module, "tide.jsonl")) return e;
    return NULL;
}

tide_jsonl_t *tide_jsonl_new(char **errp) {
    tide_jsonl_t *j = calloc(1, sizeof(*j));
    const tide_embedded_t *src = parser_script();
    if (!j || !src || !(j->L = luaL_newstate())) {
        *errp = strdup(src ? "not enough memory" : "tide.jsonl is not embedded");
        tide_jsonl_free(j);
        return NULL;
    }
    luaL_openlibs(j->L);
    char chunk[256];
    snprintf(chunk, sizeof(chunk), "@%s", src->path);
    if (luaL_loadbuffer(j->L, src->source, src->len, chunk)) {
        *errp = strdup(lua_tostring(j->L, -1));
        tide_jsonl_free(j);
        return NULL;
    }
    if (tide_lua_pcall(j->L, 0, 1, &j->err)) {
        *errp = strdup(j->err.message ? j->err.message : "cannot load the JSON parser");
        tide_jsonl_free(j);
        return NULL;
    }
    lua_getfield(j->L, -1, "parse"); /* tide.jsonl's parse(line) */
    j->fn_ref = luaL_ref(j->L, LUA_REGISTRYINDEX);
    return j;
}

static const char *str_at(lua_State *L, int idx, int32_t *len) {
    size_t l;
    const char *s = lua_tolstring(L, idx, &l);
    *len = s ? (int32_t)l : -1;
    return s;
}

/* Room for n headers; the arrays kept so far stay valid on failure. */
static tide_status_t grow(tide_jsonl_t *j, int n) {
    const char **names = realloc(j->names, (size_t)n * sizeof(char *));
    if (names) j->names = names;
    const char **values = realloc(j->values, (size_t)n * sizeof(char *));
    if (values) j->values = values;
    size_t *lens = realloc(j->lens, (size_t)n * sizeof(size_t));
    if (lens) j->lens = lens;
    if (!names || !values || !lens) return TIDE_ERROR;
    j->cap = n;
    return TIDE_OK;
}

tide_status_t tide_jsonl_parse(tide_jsonl_t *j, const char *line, size_t len,
                               tide_jsonl_rec_t *out, char **errp) {
    lua_State *L = j->L;
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, j->fn_ref);
    lua_pushlstring(L, line, len);
    if (tide_lua_pcall(L, 1, 5, &j->err)) {
        *errp = strdup(j->err.message ? j->err.message : "invalid line");
        return TIDE_ERROR;
    }
    /* Results stay on the stack until the next parse: pointers stay valid. */
    out->key = str_at(L, 1, &out->key_len);
    out->value = str_at(L, 2, &out->value_len);
    out->partition = (int32_t)lua_tointeger(L, 3);
    out->timestamp = (int64_t)lua_tonumber(L, 5);
    int nh = (int)lua_objlen(L, 4) / 2;
    if (nh > j->cap && grow(j, nh) != TIDE_OK) {
        *errp = strdup("not enough memory for the headers");
        return TIDE_ERROR;
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
    return TIDE_OK;
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
