/*
 * avro_tool.c: the converter behind avro_tool.h. It owns a Lua state with
 * tide's scripts preloaded and the two functions tide.avro_tool made; each
 * call goes through tide_lua_pcall, and its result stays on the stack until
 * the next call, which is how the returned pointers stay valid.
 */
#include "avro_tool.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "lua_call.h"

struct tide_avro_tool {
    lua_State *L;
    int encode_ref, decode_ref;
    tide_lua_error_t err;
};

tide_avro_tool_t *tide_avro_tool_new(const tide_registry_opts_t *reg, const char *topic,
                                     const char *schema_path, char **errp) {
    tide_avro_tool_t *t = calloc(1, sizeof(*t));
    if (!t || !(t->L = luaL_newstate())) {
        free(t);
        *errp = strdup("cannot create a Lua state");
        return NULL;
    }
    lua_State *L = t->L;
    luaL_openlibs(L);
    if (tide_lua_preload(L) != 0) {
        *errp = strdup(lua_tostring(L, -1));
        tide_avro_tool_free(t);
        return NULL;
    }
    lua_getglobal(L, "require");
    lua_pushstring(L, "tide.avro_tool");
    if (tide_lua_pcall(L, 1, 1, &t->err)) goto fail;
    lua_getfield(L, -1, "new");
    lua_remove(L, -2);
    tide_lua_push_registry(L, reg);
    lua_pushstring(L, topic);
    if (schema_path) lua_pushstring(L, schema_path);
    else lua_pushnil(L);
    if (tide_lua_pcall(L, 3, 2, &t->err)) goto fail;
    t->decode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->encode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return t;
fail:
    *errp = strdup(t->err.message ? t->err.message : "cannot set up Avro");
    tide_avro_tool_free(t);
    return NULL;
}

static int convert(tide_avro_tool_t *t, int ref, const char *in, size_t len, const char **out,
                   size_t *out_len, char **errp) {
    lua_State *L = t->L;
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_pushlstring(L, in, len);
    if (tide_lua_pcall(L, 1, 1, &t->err)) {
        *errp = strdup(t->err.message ? t->err.message : "cannot convert");
        return -1;
    }
    *out = lua_tolstring(L, 1, out_len);
    return 0;
}

int tide_avro_tool_encode(tide_avro_tool_t *t, const char *in, size_t len, const char **out,
                          size_t *out_len, char **errp) {
    return convert(t, t->encode_ref, in, len, out, out_len, errp);
}

int tide_avro_tool_decode(tide_avro_tool_t *t, const char *in, size_t len, const char **out,
                          size_t *out_len, char **errp) {
    return convert(t, t->decode_ref, in, len, out, out_len, errp);
}

void tide_avro_tool_free(tide_avro_tool_t *t) {
    if (!t) return;
    if (t->L) lua_close(t->L);
    tide_lua_error_free(&t->err);
    free(t);
}
