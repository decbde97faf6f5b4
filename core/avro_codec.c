/*
 * avro_codec.c: the Avro codec (see avro_codec.h). avro-c does the encoding: it parses
 * schemas, reads and writes the binary form (avro_value_read/write) and
 * resolves a writer schema against a reader schema (its resolved writer).
 * What is ours is the value avro-c reads into and writes from: an
 * implementation of its avro_value_iface_t over a flat array of tokens
 * (tide_avro_tok_t), which the Lua side reads and fills through the FFI with
 * no per-field call across the boundary.
 *
 * Speed: avro-c allocates every string it reads (twice: the bytes and a
 * wrapper), which costs more than the rest of a decode. While a decode runs,
 * avro-c's allocator hands out memory from an arena that the next decode
 * reuses; the decoded strings stay in it, valid until then, which is what
 * the tokens point at. Memory allocated outside a decode, or grown from such
 * memory, is plain malloc, so nothing long-lived ever lands in the arena.
 * A decode through avro-c's resolver (a reader schema that differs) does not
 * use the arena: the resolver keeps memory it allocates while reading.
 *
 * Owns: schema handles, codecs and their buffers. Never: Lua, Kafka, I/O.
 * Not thread-safe: one thread decodes (a worker's, a Lua state's).
 */
#include "avro_codec.h"

#include <avro.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_CELL (-1)              /* a decoded array or map cell */
#define MAX_TOKENS (1 << 24)       /* no value of ours needs more */
#define ARENA_BLOCK (64 * 1024)

static __thread char last_err[512];

static void set_error(const char *what, const char *why) {
    snprintf(last_err, sizeof(last_err), "%s%s%s", what, why && *why ? ": " : "",
             why ? why : "");
}

static const char *last_error(void) { return last_err; }

/* ---------------------------------------------------------------- arena */

/* Blocks of the arena; the last one is the one being filled. A decode that
 * outgrows them adds one twice as large; the next decode starts over in the
 * largest. */
static struct {
    char *block[24];
    size_t size[24], used;
    int n, on;
    size_t limit; /* largest single allocation while on: the input's length */
} arena;

static int in_arena(const void *p) {
    for (int i = 0; i < arena.n; i++)
        if ((const char *)p >= arena.block[i] && (const char *)p < arena.block[i] + arena.size[i])
            return 1;
    return 0;
}

static void *arena_take(size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (arena.n && arena.used + n <= arena.size[arena.n - 1]) {
        void *p = arena.block[arena.n - 1] + arena.used;
        arena.used += n;
        return p;
    }
    if (arena.n == (int)(sizeof(arena.block) / sizeof(arena.block[0]))) return NULL;
    size_t size = arena.n ? arena.size[arena.n - 1] * 2 : ARENA_BLOCK;
    while (size < n) size *= 2;
    char *b = malloc(size);
    if (!b) return NULL;
    arena.block[arena.n] = b;
    arena.size[arena.n++] = size;
    arena.used = n;
    return b;
}

/* avro-c's allocator: the arena for fresh blocks while a decode runs (a free
 * there is a no-op), malloc for everything else. */
static void *on_avro_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    int mine = ptr && in_arena(ptr);
    if (nsize == 0) {
        if (ptr && !mine) free(ptr);
        return NULL;
    }
    if (mine || (!ptr && arena.on)) {
        /* Bytes claiming more than the input holds are not a value: refuse
         * before allocating (a 5-byte record "holding" a 2 GB string). */
        if (arena.on && nsize > arena.limit) return NULL;
        void *p = arena.on ? arena_take(nsize) : malloc(nsize);
        if (p && ptr) memcpy(p, ptr, osize < nsize ? osize : nsize);
        return p;
    }
    return realloc(ptr, nsize);
}

/* use_arena 0: avro-c allocates with malloc (its resolver keeps memory it
 * allocates while reading, which must outlive the decode); our own copies
 * still go to the arena. */
static void arena_begin(size_t input_len, int use_arena) {
    static int installed;
    if (!installed) {
        avro_set_allocator(on_avro_alloc, NULL);
        installed = 1;
    }
    if (arena.n > 1) {
        /* keep the largest block only */
        char *keep = arena.block[arena.n - 1];
        size_t size = arena.size[arena.n - 1];
        for (int i = 0; i < arena.n - 1; i++) free(arena.block[i]);
        arena.block[0] = keep;
        arena.size[0] = size;
        arena.n = 1;
    }
    arena.used = 0;
    arena.limit = input_len + 64;
    arena.on = use_arena;
}

static void arena_end(void) { arena.on = 0; }

/* ---------------------------------------------------------------- nodes */

/* A schema as the token value needs it: links resolved, children in order
 * (record fields, union branches, the items of an array, a map's values). */
typedef struct node {
    avro_schema_t schema;
    avro_type_t type;
    int n;
    struct node **child;
} node_t;

typedef struct node_set {
    node_t **all;
    int n, cap;
} node_set_t;

static node_t *node_of(node_set_t *set, avro_schema_t s) {
    while (is_avro_link(s)) s = avro_schema_link_target(s);
    for (int i = 0; i < set->n; i++)
        if (set->all[i]->schema == s) return set->all[i];
    if (set->n == set->cap) {
        int cap = set->cap ? set->cap * 2 : 16;
        node_t **all = realloc(set->all, (size_t)cap * sizeof(*all));
        if (!all) return NULL;
        set->all = all;
        set->cap = cap;
    }
    node_t *nd = calloc(1, sizeof(*nd));
    if (!nd) return NULL;
    set->all[set->n++] = nd;
    nd->schema = s;
    nd->type = avro_typeof(s);
    switch (nd->type) {
    case AVRO_RECORD: nd->n = (int)avro_schema_record_size(s); break;
    case AVRO_UNION: nd->n = (int)avro_schema_union_size(s); break;
    case AVRO_ARRAY:
    case AVRO_MAP: nd->n = 1; break;
    default: return nd;
    }
    nd->child = calloc((size_t)nd->n + 1, sizeof(node_t *));
    if (!nd->child) return NULL;
    for (int i = 0; i < nd->n; i++) {
        avro_schema_t c = nd->type == AVRO_RECORD  ? avro_schema_record_field_get_by_index(s, i)
                          : nd->type == AVRO_UNION ? avro_schema_union_branch(s, i)
                          : nd->type == AVRO_ARRAY ? avro_schema_array_items(s)
                                                   : avro_schema_map_values(s);
        if (!(nd->child[i] = node_of(set, c))) return NULL;
    }
    return nd;
}

static void node_set_free(node_set_t *set) {
    for (int i = 0; i < set->n; i++) {
        free(set->all[i]->child);
        free(set->all[i]);
    }
    free(set->all);
}

/* ---------------------------------------------------------------- the value */

/* Where a value lives while avro-c reads or writes it: its node, its token,
 * and for a decoded array or map the last cell (to chain the next). */
typedef struct inst {
    struct tape *t;
    node_t *node;
    int32_t slot, last;
} inst_t;

/* Tokens and instances of one decode or encode. Both are fixed for its
 * duration (avro-c holds pointers to instances); running out fails it, and
 * the caller retries with twice the room. */
typedef struct tape {
    tide_avro_tok_t *tok;
    int32_t n, cap;
    const tide_avro_tok_t *src; /* encode: the caller's tokens */
    inst_t *inst;
    int32_t n_inst, cap_inst;
    int full;
    /* buffers avro-c gave away outside the arena (see decode): freed at
     * the next decode */
    avro_wrapped_buffer_t *given;
    int32_t n_given, cap_given;
} tape_t;

static avro_value_iface_t tape_iface;

static int32_t tape_take(tape_t *t, int32_t n) {
    if (t->n + n > t->cap) {
        t->full = 1;
        return -1;
    }
    int32_t at = t->n;
    t->n += n;
    for (int32_t i = at; i < t->n; i++) {
        tide_avro_tok_t *k = &t->tok[i];
        k->type = AVRO_NULL;
        k->branch = -1;
        k->n = 0;
        k->next = 0;
        k->v.i = 0;
    }
    return at;
}

/* The value for `slot`; a record reserves its block when decoding. */
static int value_at(tape_t *t, node_t *nd, int32_t slot, avro_value_t *out) {
    if (t->n_inst == t->cap_inst) {
        t->full = 1;
        return ENOMEM;
    }
    inst_t *x = &t->inst[t->n_inst++];
    *x = (inst_t){t, nd, slot, 0};
    if (!t->src) {
        tide_avro_tok_t *k = &t->tok[slot];
        k->type = nd->type;
        if (nd->type == AVRO_RECORD) {
            int32_t b = tape_take(t, nd->n);
            if (b < 0) return ENOMEM;
            t->tok[slot].v.i = b;
        }
    }
    out->iface = &tape_iface;
    out->self = x;
    return 0;
}

#define X ((inst_t *)self)
#define CX ((const inst_t *)self)
/* the token being written (decode) or read (encode) */
#define TOK (&X->t->tok[X->slot])
#define SRC (&CX->t->src[CX->slot])

/* Values live in a tape, not on their own: references cost nothing. */
static avro_value_iface_t *v_incref_iface(avro_value_iface_t *i) { return i; }
static void v_decref_iface(avro_value_iface_t *i) { (void)i; }
static void v_incref(avro_value_t *v) { (void)v; }
static void v_decref(avro_value_t *v) { (void)v; }
static int v_reset(const avro_value_iface_t *i, void *self) { (void)i; (void)self; return 0; }
static avro_type_t v_type(const avro_value_iface_t *i, const void *self) {
    (void)i;
    return CX->node->type;
}
static avro_schema_t v_schema(const avro_value_iface_t *i, const void *self) {
    (void)i;
    return CX->node->schema;
}

/* Setters, for decoding. */
static int v_set_boolean(const avro_value_iface_t *i, void *self, int v) { (void)i; TOK->v.i = v; return 0; }
static int v_set_int(const avro_value_iface_t *i, void *self, int32_t v) { (void)i; TOK->v.i = v; return 0; }
static int v_set_long(const avro_value_iface_t *i, void *self, int64_t v) { (void)i; TOK->v.i = v; return 0; }
static int v_set_float(const avro_value_iface_t *i, void *self, float v) { (void)i; TOK->v.d = v; return 0; }
static int v_set_double(const avro_value_iface_t *i, void *self, double v) { (void)i; TOK->v.d = v; return 0; }
static int v_set_null(const avro_value_iface_t *i, void *self) { (void)i; (void)self; return 0; }
static int v_set_enum(const avro_value_iface_t *i, void *self, int v) { (void)i; TOK->v.i = v; return 0; }

/* Bytes avro-c lends (a promotion, say): kept in the arena until the next decode. */
static int keep_bytes(void *self, const void *buf, size_t size) {
    char *p = arena_take(size + 1);
    if (!p) return ENOMEM;
    memcpy(p, buf, size);
    p[size] = '\0';
    TOK->v.p = p;
    TOK->n = (int32_t)size;
    return 0;
}
static int v_set_bytes(const avro_value_iface_t *i, void *self, void *buf, size_t size) {
    (void)i;
    return keep_bytes(self, buf, size);
}
static int v_set_string_len(const avro_value_iface_t *i, void *self, const char *s, size_t size) {
    (void)i;
    return keep_bytes(self, s, size ? size - 1 : 0); /* size counts the NUL */
}
static int v_set_string(const avro_value_iface_t *i, void *self, const char *s) {
    (void)i;
    return keep_bytes(self, s, strlen(s));
}
/* Bytes avro-c gives away: in the arena, or kept until the next decode. */
static int keep_given(tape_t *t, avro_wrapped_buffer_t *b) {
    if (arena.on || !b->free) return 0;
    if (t->n_given == t->cap_given) {
        int32_t cap = t->cap_given ? t->cap_given * 2 : 16;
        avro_wrapped_buffer_t *g = realloc(t->given, (size_t)cap * sizeof(*g));
        if (!g) {
            b->free(b);
            return ENOMEM;
        }
        t->given = g;
        t->cap_given = cap;
    }
    t->given[t->n_given++] = *b;
    return 0;
}

static void free_given(tape_t *t) {
    for (int32_t i = 0; i < t->n_given; i++) t->given[i].free(&t->given[i]);
    t->n_given = 0;
}

static int v_give_bytes(const avro_value_iface_t *i, void *self, avro_wrapped_buffer_t *b) {
    (void)i;
    if (keep_given(X->t, b)) return ENOMEM;
    TOK->v.p = b->buf;
    TOK->n = (int32_t)b->size;
    return 0;
}
static int v_give_string_len(const avro_value_iface_t *i, void *self, avro_wrapped_buffer_t *b) {
    (void)i;
    if (keep_given(X->t, b)) return ENOMEM;
    TOK->v.p = b->buf;
    TOK->n = b->size ? (int32_t)b->size - 1 : 0;
    return 0;
}

static int v_get_size(const avro_value_iface_t *i, const void *self, size_t *size) {
    (void)i;
    if (CX->node->type == AVRO_RECORD) *size = (size_t)CX->node->n;
    else if (CX->t->src) *size = (size_t)SRC->n;
    else *size = (size_t)CX->t->tok[CX->slot].n;
    return 0;
}

static int v_get_by_index(const avro_value_iface_t *i, const void *self, size_t index,
                          avro_value_t *child, const char **name) {
    (void)i;
    tape_t *t = CX->t;
    node_t *nd = CX->node;
    if (nd->type == AVRO_RECORD) {
        const tide_avro_tok_t *k = t->src ? SRC : &t->tok[CX->slot];
        if (name) *name = avro_schema_record_field_name(nd->schema, (int)index);
        return value_at(t, nd->child[index], (int32_t)k->v.i + (int32_t)index, child);
    }
    /* encode only: contiguous elements, a map's as key, value */
    if (nd->type == AVRO_MAP) {
        int32_t at = (int32_t)SRC->v.i + 2 * (int32_t)index;
        if (name) *name = t->src[at].v.p;
        return value_at(t, nd->child[0], at + 1, child);
    }
    return value_at(t, nd->child[0], (int32_t)SRC->v.i + (int32_t)index, child);
}

/* A new cell at the end of a decoded array or map; its value follows it. */
static int add_cell(void *self, const char *key, avro_value_t *child) {
    tape_t *t = X->t;
    int32_t c = tape_take(t, 2);
    if (c < 0) return ENOMEM;
    tide_avro_tok_t *k = &t->tok[c];
    k->type = TOK_CELL;
    if (key) {
        /* the key is freed by avro-c once its value is read: keep a copy */
        size_t len = strlen(key);
        char *p = arena_take(len + 1);
        if (!p) return ENOMEM;
        memcpy(p, key, len + 1);
        k->v.p = p;
        k->n = (int32_t)len;
    }
    tide_avro_tok_t *head = TOK;
    if (X->last) t->tok[X->last].next = c;
    else head->v.i = c;
    X->last = c;
    head->n++;
    return value_at(t, X->node->child[0], c + 1, child);
}
static int v_append(const avro_value_iface_t *i, void *self, avro_value_t *child, size_t *index) {
    (void)i;
    if (index) *index = (size_t)TOK->n;
    return add_cell(self, NULL, child);
}
static int v_add(const avro_value_iface_t *i, void *self, const char *key, avro_value_t *child,
                 size_t *index, int *is_new) {
    (void)i;
    if (index) *index = (size_t)TOK->n;
    if (is_new) *is_new = 1;
    return add_cell(self, key, child);
}

/* A union's branch lives in the union's own token, which records the branch. */
static int v_set_branch(const avro_value_iface_t *i, void *self, int d, avro_value_t *branch) {
    (void)i;
    if (d < 0 || d >= X->node->n) return EINVAL;
    tide_avro_tok_t *k = TOK;
    if (k->branch == d && k->type == AVRO_RECORD && k->v.i) {
        /* avro-c's resolver selects a branch again for each field of a
         * record in it: keep the record's block */
        tape_t *t = X->t;
        if (t->n_inst == t->cap_inst) {
            t->full = 1;
            return ENOMEM;
        }
        inst_t *x = &t->inst[t->n_inst++];
        *x = (inst_t){t, X->node->child[d], X->slot, 0};
        branch->iface = &tape_iface;
        branch->self = x;
        return 0;
    }
    int rc = value_at(X->t, X->node->child[d], X->slot, branch);
    X->t->tok[X->slot].branch = d;
    return rc;
}

/* Getters, for encoding (tokens the Lua side filled). */
static int v_get_boolean(const avro_value_iface_t *i, const void *self, int *out) { (void)i; *out = (int)SRC->v.i; return 0; }
static int v_get_int(const avro_value_iface_t *i, const void *self, int32_t *out) { (void)i; *out = (int32_t)SRC->v.i; return 0; }
static int v_get_long(const avro_value_iface_t *i, const void *self, int64_t *out) { (void)i; *out = SRC->v.i; return 0; }
static int v_get_float(const avro_value_iface_t *i, const void *self, float *out) { (void)i; *out = (float)SRC->v.d; return 0; }
static int v_get_double(const avro_value_iface_t *i, const void *self, double *out) { (void)i; *out = SRC->v.d; return 0; }
static int v_get_null(const avro_value_iface_t *i, const void *self) { (void)i; (void)self; return 0; }
static int v_get_enum(const avro_value_iface_t *i, const void *self, int *out) { (void)i; *out = (int)SRC->v.i; return 0; }
static int v_get_bytes(const avro_value_iface_t *i, const void *self, const void **buf, size_t *size) {
    (void)i;
    *buf = SRC->v.p;
    *size = (size_t)SRC->n;
    return 0;
}
static int v_get_string(const avro_value_iface_t *i, const void *self, const char **s, size_t *size) {
    (void)i;
    *s = SRC->v.p;
    *size = (size_t)SRC->n + 1; /* avro-c counts the NUL */
    return 0;
}
static int v_get_discriminant(const avro_value_iface_t *i, const void *self, int *out) {
    (void)i;
    *out = SRC->branch;
    return *out >= 0 && *out < CX->node->n ? 0 : EINVAL;
}
static int v_get_current_branch(const avro_value_iface_t *i, const void *self, avro_value_t *b) {
    (void)i;
    int d = SRC->branch;
    if (d < 0 || d >= CX->node->n) return EINVAL;
    return value_at(CX->t, CX->node->child[d], CX->slot, b);
}

static avro_value_iface_t tape_iface = {
    .incref_iface = v_incref_iface,
    .decref_iface = v_decref_iface,
    .incref = v_incref,
    .decref = v_decref,
    .reset = v_reset,
    .get_type = v_type,
    .get_schema = v_schema,
    .get_boolean = v_get_boolean,
    .get_bytes = v_get_bytes,
    .get_double = v_get_double,
    .get_float = v_get_float,
    .get_int = v_get_int,
    .get_long = v_get_long,
    .get_null = v_get_null,
    .get_string = v_get_string,
    .get_enum = v_get_enum,
    .get_fixed = v_get_bytes,
    .set_boolean = v_set_boolean,
    .set_bytes = v_set_bytes,
    .give_bytes = v_give_bytes,
    .set_double = v_set_double,
    .set_float = v_set_float,
    .set_int = v_set_int,
    .set_long = v_set_long,
    .set_null = v_set_null,
    .set_string = v_set_string,
    .set_string_len = v_set_string_len,
    .give_string_len = v_give_string_len,
    .set_enum = v_set_enum,
    .set_fixed = v_set_bytes,
    .give_fixed = v_give_bytes,
    .get_size = v_get_size,
    .get_by_index = v_get_by_index,
    .get_discriminant = v_get_discriminant,
    .get_current_branch = v_get_current_branch,
    .append = v_append,
    .add = v_add,
    .set_branch = v_set_branch,
};

static int tape_grow(tape_t *t, int32_t tokens, int32_t insts) {
    if (tokens > t->cap) {
        tide_avro_tok_t *k = realloc(t->tok, (size_t)tokens * sizeof(*k));
        if (!k) return -1;
        t->tok = k;
        t->cap = tokens;
    }
    if (insts > t->cap_inst) {
        inst_t *x = realloc(t->inst, (size_t)insts * sizeof(*x));
        if (!x) return -1;
        t->inst = x;
        t->cap_inst = insts;
    }
    return 0;
}

static void tape_free(tape_t *t) {
    free_given(t);
    free(t->given);
    free(t->tok);
    free(t->inst);
}

/* ---------------------------------------------------------------- schemas */

typedef struct schema {
    avro_schema_t s;
    node_set_t nodes;
    node_t *root;
    tape_t enc;     /* encode's instances */
    char *out;      /* encode's output */
    size_t out_cap;
    avro_writer_t writer;
} schema_t;

static void schema_free(void *p) {
    schema_t *sc = p;
    if (!sc) return;
    if (sc->writer) avro_writer_free(sc->writer);
    node_set_free(&sc->nodes);
    tape_free(&sc->enc);
    free(sc->out);
    if (sc->s) avro_schema_decref(sc->s);
    free(sc);
}

static void *schema_new(const char *json, int32_t len) {
    schema_t *sc = calloc(1, sizeof(*sc));
    if (!sc) {
        set_error("not enough memory", NULL);
        return NULL;
    }
    if (avro_schema_from_json_length(json, (size_t)len, &sc->s)) {
        set_error("not a valid Avro schema", avro_strerror());
        sc->s = NULL;
        schema_free(sc);
        return NULL;
    }
    if (!(sc->root = node_of(&sc->nodes, sc->s))) {
        set_error("not enough memory", NULL);
        schema_free(sc);
        return NULL;
    }
    return sc;
}

static int schema_equal(void *a, void *b) {
    return avro_schema_equal(((schema_t *)a)->s, ((schema_t *)b)->s);
}

/* The wire format's header: a zero byte and the schema id, big-endian. */
static void put_header(char *p, int32_t id) {
    p[0] = 0;
    p[1] = (char)((uint32_t)id >> 24);
    p[2] = (char)((uint32_t)id >> 16);
    p[3] = (char)((uint32_t)id >> 8);
    p[4] = (char)id;
}

static int32_t encode(void *p, const tide_avro_tok_t *src, int32_t id, const char **out) {
    schema_t *sc = p;
    int32_t head = id >= 0 ? 5 : 0;
    if (!sc->out && !(sc->out = malloc(sc->out_cap = 256))) goto nomem;
    if (!sc->writer && !(sc->writer = avro_writer_memory(sc->out, (int64_t)sc->out_cap))) goto nomem;
    if (!sc->enc.cap_inst && tape_grow(&sc->enc, 0, 256)) goto nomem;
    for (;;) {
        tape_t *t = &sc->enc;
        t->src = src;
        t->n_inst = 0;
        t->full = 0;
        avro_value_t root;
        avro_writer_memory_set_dest(sc->writer, sc->out + head, (int64_t)(sc->out_cap - head));
        int rc = value_at(t, sc->root, 0, &root);
        if (!rc) rc = avro_value_write(sc->writer, &root);
        if (!rc) {
            if (head) put_header(sc->out, id);
            *out = sc->out;
            return head + (int32_t)avro_writer_tell(sc->writer);
        }
        if (t->full) {
            if (tape_grow(t, 0, t->cap_inst * 2)) goto nomem;
        } else if (rc == ENOSPC && sc->out_cap < ((size_t)1 << 30)) {
            char *o = realloc(sc->out, sc->out_cap * 2);
            if (!o) goto nomem;
            sc->out = o;
            sc->out_cap *= 2;
        } else {
            set_error("cannot encode the value", avro_strerror());
            return -1;
        }
    }
nomem:
    set_error("not enough memory to encode the value", NULL);
    return -1;
}

/* ---------------------------------------------------------------- codecs */

typedef struct codec {
    schema_t *writer, *reader; /* reader: the shape values come out in */
    avro_value_iface_t *resolver; /* NULL when the schemas are the same */
    avro_value_t resolved;
    avro_reader_t in;
    tape_t dec;
    avro_schema_t ws, rs; /* held, so the handles may be freed first */
} codec_t;

static void codec_free(void *p) {
    codec_t *c = p;
    if (!c) return;
    if (c->resolver) {
        avro_value_decref(&c->resolved);
        avro_value_iface_decref(c->resolver);
    }
    if (c->in) avro_reader_free(c->in);
    if (c->ws) avro_schema_decref(c->ws);
    if (c->rs) avro_schema_decref(c->rs);
    tape_free(&c->dec);
    free(c);
}

static void *codec_new(void *writer, void *reader) {
    codec_t *c = calloc(1, sizeof(*c));
    if (!c) goto nomem;
    c->writer = writer;
    c->reader = reader ? reader : writer;
    c->ws = avro_schema_incref(c->writer->s);
    c->rs = avro_schema_incref(c->reader->s);
    if (c->reader != c->writer && !avro_schema_equal(c->writer->s, c->reader->s)) {
        c->resolver = avro_resolved_writer_new(c->writer->s, c->reader->s);
        if (!c->resolver) {
            set_error("the reader schema cannot read data of the writer schema", avro_strerror());
            codec_free(c);
            return NULL;
        }
        if (avro_resolved_writer_new_value(c->resolver, &c->resolved)) {
            avro_value_iface_decref(c->resolver);
            c->resolver = NULL;
            goto nomem;
        }
    }
    if (!(c->in = avro_reader_memory("", 0)) || tape_grow(&c->dec, 64, 64)) goto nomem;
    return c;
nomem:
    codec_free(c);
    set_error("not enough memory", NULL);
    return NULL;
}

/* One try at decoding buf into the tape; ENOMEM with t->full when it ran
 * out of room. */
static int decode_once(codec_t *c, const char *buf, int32_t len) {
    tape_t *t = &c->dec;
    t->n = t->n_inst = 0;
    t->full = 0;
    t->src = NULL;
    avro_value_t root;
    tape_take(t, 1);
    int rc = value_at(t, c->reader->root, 0, &root);
    if (rc) return rc;
    avro_reader_memory_set_source(c->in, buf, len);
    if (c->resolver) {
        avro_resolved_writer_set_dest(&c->resolved, &root);
        rc = avro_value_read(c->in, &c->resolved);
    } else {
        rc = avro_value_read(c->in, &root);
    }
    if (rc) return rc;
    char extra;
    if (avro_read(c->in, &extra, 1) == 0) {
        set_error("the bytes do not match the schema", "bytes left over after the value");
        return -1;
    }
    return 0;
}

static const tide_avro_tok_t *decode(void *p, const char *buf, int32_t len) {
    codec_t *c = p;
    tape_t *t = &c->dec;
    for (;;) {
        free_given(t);
        arena_begin((size_t)len, c->resolver == NULL);
        int rc = decode_once(c, buf, len);
        arena_end();
        if (!rc) return t->tok;
        if (!t->full) {
            /* avro-c repeats "Cannot read N bytes from memory buffer" per level */
            if (rc != -1)
                set_error("the bytes do not match the schema",
                          strstr(avro_strerror(), "from memory buffer")
                              ? "they end before the value does"
                              : avro_strerror());
            return NULL;
        }
        /* a nest of empty values (nulls take no bytes) is bounded here */
        if (t->cap >= MAX_TOKENS || tape_grow(t, t->cap * 2, t->cap_inst * 2)) {
            set_error("the bytes do not match the schema", "more values than tide reads in a record");
            return NULL;
        }
    }
}

/* ---------------------------------------------------------------- decimals */

static double decimal_value(const char *p, int32_t n, int32_t scale) {
    const unsigned char *u = (const unsigned char *)p;
    if (n <= 0) return 0;
    /* two's complement: the first byte's top bit is the sign */
    double v = (u[0] & 0x80) ? -1 : 0;
    for (int32_t i = 0; i < n; i++) v = v * 256 + u[i];
    return v / pow(10, scale);
}

static int32_t decimal_bytes(double value, int32_t scale, int32_t size, char *out) {
    double u = nearbyint(value * pow(10, scale));
    if (!isfinite(u) || fabs(u) >= 0x1p63) return -1;
    int64_t x = (int64_t)u;
    unsigned char b[8];
    for (int i = 7; i >= 0; i--) {
        b[i] = (unsigned char)(x & 0xff);
        x >>= 8; /* arithmetic: keeps the sign */
    }
    /* as few bytes as keep the sign, or `size` (sign-extended) */
    int first = 0;
    while (first < 7 && ((b[first] == 0 && !(b[first + 1] & 0x80)) ||
                         (b[first] == 0xff && (b[first + 1] & 0x80))))
        first++;
    int32_t n = 8 - first;
    if (size > 0) {
        if (n > size || size > 32) return -1;
        memset(out, (b[0] & 0x80) ? 0xff : 0, (size_t)(size - n));
        memcpy(out + size - n, b + first, (size_t)n);
        return size;
    }
    memcpy(out, b + first, (size_t)n);
    return n;
}

const tide_avro_api_t tide_avro_api = {
    schema_new, schema_free, schema_equal, codec_new, codec_free, decode,
    encode, last_error, decimal_value, decimal_bytes,
};
