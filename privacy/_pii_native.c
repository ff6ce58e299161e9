/* privacy._pii_native: the built-in PII rules of privacy/pii.py that ordinary text hits, in C.
 *
 * A port, not a new detector: each matcher below reproduces, for ASCII text, what Python's `re` finds with the
 * rule's pattern in `finditer` (leftmost start, the backtracking order's first match, scanning on from its end),
 * and each accept function reproduces the rule's Python accept function. Overlap resolution, pseudonyms and the
 * result objects follow PiiStripper._resolve, _Pseudonyms and _normalize. pii.py stays the reference: it checks
 * that its patterns are the ones ported here (PORTED_SHA256) before it uses this module, and
 * tests/privacy/test_pii_native.py compares both engines on the corpus and on generated text.
 *
 * A text is declined (the functions return None and pii.py runs its Python engine) when it is not ASCII, or when
 * a rule that is not ported could match it: the Python pre-filter's necessary conditions for those rules (a trigger
 * literal, the 16-character token gate of the provider-key rules, the quick patterns of the generic and CLI secret
 * rules) are checked here, conservatively, and any hit declines the text. For url_credentials (whose "://" is in
 * every URL) the check is its pattern itself: a text declines only where user:password@ could follow. An IPv6
 * candidate with a dotted IPv4 tail or an IPv4-mapped address declines too (ipaddress reads those differently
 * across Python versions). Custom rules (PiiStripper.add_rule) never reach this module.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef Py_ssize_t ssz;
typedef const unsigned char uch;

/* sha256 of pii._native_fingerprint(): the patterns this file ports. */
#define PORTED_SHA256 "262da42bf959b6df61652eb9acf91680699ddba7d2b9f37325694e870bf7d6c4"

/* --- character classes (ASCII) ------------------------------------------------------------------------------- */

enum {
    F_SPACE = 1u << 0,    /* \s */
    F_WORD = 1u << 1,     /* \w */
    F_DIGIT = 1u << 2,
    F_ALPHA = 1u << 3,
    F_UPPER = 1u << 4,
    F_HEX = 1u << 5,
    F_UP1 = 1u << 6,      /* unix path, first run of a file name: [^\s/\\"'`<>|;,:()\[\]{}*?.] */
    F_UP2 = 1u << 7,      /* unix path, a run after a space in a file name: the same, backslash allowed */
    F_USEG = 1u << 8,     /* unix path segment character (the "\ " pair aside): [^\s/\\"'`<>|;,:()\[\]{}*?] */
    F_W1 = 1u << 9,       /* windows file-name runs: [^\s\\/:*?"<>|,;'`\[\]{}.] */
    F_WSEG = 1u << 10,    /* windows segment character: [^\s\\/:*?"<>|,;'`\[\]{}] */
    F_END = 1u << 11,     /* _END's character set: [\s"'`)\],;:!?] */
    F_PATHNB = 1u << 12,  /* _NOT_BEFORE_PATH: [\w.:/\\~\]\[@$%-] */
    F_LOCAL = 1u << 13,   /* e-mail local part */
    F_ALNUM = 1u << 14,
    F_UNCNAME = 1u << 15, /* [A-Za-z0-9_.$-] */
    F_FILEURL = 1u << 16, /* [^\s"'<>`] */
    F_LABEL = 1u << 17,   /* [A-Za-z0-9-] */
    F_HNAME = 1u << 18,   /* [A-Za-z0-9_-] (also the provider gate's token character) */
    F_HNOT = 1u << 19,    /* the handle's look-behind: [\w.@/\\`:+<-] */
    F_HNLA = 1u << 20,    /* the handle's look-ahead: [\w@/(`-] */
    F_ENVU = 1u << 21,    /* [A-Z0-9_] */
    F_TRIM = 1u << 22,    /* _trim_trailing's characters: .,:;!?'" */
    F_TILDEU = 1u << 23,  /* [A-Za-z0-9_.-] after "~" */
    F_AZ09 = 1u << 24,    /* [A-Z0-9] */
    F_ZONE = 1u << 25,    /* [0-9A-Za-z_.-] */
    F_USERINFO = 1u << 26, /* [^\s/?#@"'<>] */
};

static uint32_t CL[128];

static void cls_all_but(uint32_t flag, const char *excluded, int exclude_space)
{
    for (int c = 0; c < 128; c++) {
        if (exclude_space && (CL[c] & F_SPACE))
            continue;
        if (c != 0 && strchr(excluded, c))
            continue;
        CL[c] |= flag;
    }
}

static void cls_only(uint32_t flag, const char *chars)
{
    for (const char *p = chars; *p; p++)
        CL[(unsigned char)*p] |= flag;
}

static void cls_init(void)
{
    memset(CL, 0, sizeof CL);
    for (int c = 0; c < 128; c++) {
        if (c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f))
            CL[c] |= F_SPACE;
        if (c >= '0' && c <= '9')
            CL[c] |= F_DIGIT | F_WORD | F_ALNUM | F_HEX;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
            CL[c] |= F_ALPHA | F_WORD | F_ALNUM;
        if (c >= 'A' && c <= 'Z')
            CL[c] |= F_UPPER;
        if ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
            CL[c] |= F_HEX;
    }
    CL['_'] |= F_WORD;
    cls_all_but(F_UP1, "/\\\"'`<>|;,:()[]{}*?.", 1);
    cls_all_but(F_UP2, "/\"'`<>|;,:()[]{}*?.", 1);
    cls_all_but(F_USEG, "/\\\"'`<>|;,:()[]{}*?", 1);
    cls_all_but(F_W1, "\\/:*?\"<>|,;'`[]{}.", 1);
    cls_all_but(F_WSEG, "\\/:*?\"<>|,;'`[]{}", 1);
    cls_all_but(F_FILEURL, "\"'<>`", 1);
    cls_all_but(F_USERINFO, "/?#@\"'<>", 1);
    for (int c = 0; c < 128; c++) {
        if (CL[c] & F_SPACE)
            CL[c] |= F_END;
        if (CL[c] & F_WORD)
            CL[c] |= F_PATHNB | F_HNAME | F_HNOT | F_HNLA | F_TILDEU | F_ZONE | F_UNCNAME;
        if (CL[c] & F_ALNUM)
            CL[c] |= F_LOCAL | F_LABEL;
        if ((CL[c] & F_UPPER) || (CL[c] & F_DIGIT))
            CL[c] |= F_ENVU | F_AZ09;
    }
    CL['_'] |= F_ENVU;
    cls_only(F_END, "\"'`)],;:!?");
    cls_only(F_PATHNB, ".:/\\~][@$%-");
    cls_only(F_LOCAL, "._%+-");
    CL['_'] |= F_LOCAL;
    cls_only(F_UNCNAME, ".$-");
    cls_only(F_LABEL, "-");
    cls_only(F_HNAME, "-");
    cls_only(F_HNOT, ".@/\\`:+<-");
    cls_only(F_HNLA, "@/(`-");
    cls_only(F_TRIM, ".,:;!?'\"");
    cls_only(F_TILDEU, ".-");
    cls_only(F_ZONE, ".-");
}

#define IS(c, f) (CL[(c)] & (f))
/* the class test at i, false outside the text */
#define AT(i, f) ((i) >= 0 && (i) < n && (CL[t[(i)]] & (f)))
#define CH(i, c) ((i) >= 0 && (i) < n && t[(i)] == (c))

static inline ssz run_of(uch *t, ssz n, ssz p, uint32_t f)
{
    ssz q = p;
    while (q < n && (CL[t[q]] & f))
        q++;
    return q - p;
}

static inline int lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* --- small string sets (CODE_AT_WORDS, _WINDOWS_ENV_NAMES), lower-case ASCII --------------------------------- */

typedef struct {
    char **slots;
    size_t mask;
} strset;

static uint64_t fnv(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static void strset_free(strset *set)
{
    if (set->slots) {
        for (size_t i = 0; i <= set->mask; i++)
            free(set->slots[i]);
        free(set->slots);
    }
    set->slots = NULL;
    set->mask = 0;
}

static int strset_fill(strset *set, PyObject *words)
{
    PyObject *seq = PySequence_Fast(words, "expected a sequence of words");
    if (!seq)
        return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    size_t size = 16;
    while (size < (size_t)count * 3)
        size <<= 1;
    strset_free(set);
    set->slots = calloc(size, sizeof(char *));
    set->mask = size - 1;
    if (!set->slots) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t len;
        const char *word = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(seq, i), &len);
        if (!word) {
            Py_DECREF(seq);
            return -1;
        }
        size_t slot = fnv(word, len) & set->mask;
        while (set->slots[slot] && strcmp(set->slots[slot], word) != 0)
            slot = (slot + 1) & set->mask;
        if (!set->slots[slot] && !(set->slots[slot] = strdup(word))) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

/* is the lower-cased t[p:q] in the set? */
static int strset_has_lower(const strset *set, uch *t, ssz p, ssz q)
{
    char buf[64];
    ssz len = q - p;
    if (!set->slots || len >= (ssz)sizeof buf)
        return 0;
    for (ssz i = 0; i < len; i++)
        buf[i] = (char)lower(t[p + i]);
    buf[len] = 0;
    size_t slot = fnv(buf, len) & set->mask;
    while (set->slots[slot]) {
        if (strcmp(set->slots[slot], buf) == 0)
            return 1;
        slot = (slot + 1) & set->mask;
    }
    return 0;
}

/* --- configuration (pii.py calls setup() once) ---------------------------------------------------------------- */

enum {
    R_FILE_URL, R_UNC, R_WINDOWS, R_UNIX, R_EMAIL, R_CARD, R_IBAN, R_SSN, R_IPV4, R_IPV6, R_MAC,
    R_PHONE_INTL, R_PHONE_NANP, R_PHONE_NATIONAL, R_ENV_BRACED, R_ENV_POWERSHELL, R_ENV_UNIX, R_ENV_WINDOWS,
    R_HANDLE, N_RULES
};
static const char *RULE_NAMES[N_RULES] = {
    "file_url", "unc_path", "windows_path", "unix_path", "email", "credit_card", "iban", "us_ssn", "ipv4", "ipv6",
    "mac_address", "phone_international", "phone_nanp", "phone_national", "env_var_braced", "env_var_powershell",
    "env_var_unix", "env_var_windows", "handle",
};

enum { K_PATH, K_IP, K_MAC, K_EMAIL, K_PHONE, K_CARD, K_ID, K_IBAN, K_ENV, K_USER, N_KINDS };
static const char *KIND_CATEGORIES[N_KINDS] = {
    "path", "ip", "mac", "email", "phone", "credit_card", "national_id", "iban", "env_var", "username",
};
static const int RULE_KIND[N_RULES] = {
    K_PATH, K_PATH, K_PATH, K_PATH, K_EMAIL, K_CARD, K_IBAN, K_ID, K_IP, K_IP, K_MAC, K_PHONE, K_PHONE, K_PHONE,
    K_ENV, K_ENV, K_ENV, K_ENV, K_USER,
};

#define MAX_LITERALS 512
#define MAX_DECLINE_RULES 128
#define PSEUDONYM_CACHE 64

typedef struct {
    char text[48];
    int len;
    int caseless;
    int rule;
} literal;

#define MAX_NODES (MAX_LITERALS * 4)

static struct {
    int ready;
    PyObject *finding_type;             /* PiiFinding */
    PyObject *names[N_RULES];           /* rule names, as pii.py spells them */
    PyObject *categories[N_KINDS];
    PyObject *labels[N_KINDS];          /* "PATH", "IP", ... */
    int order[N_RULES];                 /* the rule's index in pii._BUILTIN_RULES */
    PyObject *cache[N_KINDS][PSEUDONYM_CACHE + 1]; /* "<PATH_1>"...: made once */
    strset code_at_words, windows_env_names;
    unsigned char iban_length[26][26];
    literal literals[MAX_LITERALS];
    int n_literals;
    int16_t bigram[128 * 128];          /* first node listing the literals that start with these two characters */
    uint64_t bigram_bits[128 * 128 / 64]; /* which pairs have a list: the hot loop reads only these 2 kB */
    struct {
        int16_t literal, next;
    } nodes[MAX_NODES];
    int n_nodes;
    int decline_gated[MAX_DECLINE_RULES];
    int decline_quick[MAX_DECLINE_RULES]; /* 0 none, 1 "[:=]", 2 "-[A-Za-z-]" */
    int n_decline;
} cfg;

/* --- matchers: each returns the end of the match starting at s, or -1 ------------------------------------------ */

/* _END: (?=[\s"'`)\],;:!?]|\.(?:\s|$)|$) */
static inline int path_end_ok(uch *t, ssz n, ssz p)
{
    if (p >= n || IS(t[p], F_END))
        return 1;
    return t[p] == '.' && (p + 1 >= n || IS(t[p + 1], F_SPACE));
}

/* "<run>( <run>){0,3}\.[A-Za-z0-9]{1,5}" + _END: the file-name alternative of a path segment */
static ssz file_name(uch *t, ssz n, ssz p, uint32_t first, uint32_t after_space)
{
    ssz q = p + run_of(t, n, p, first);
    if (q == p)
        return -1;
    for (int k = 0; k < 3 && CH(q, ' '); k++) {
        ssz r = run_of(t, n, q + 1, after_space);
        if (!r)
            break;
        q += 1 + r;
    }
    if (!CH(q, '.'))
        return -1;
    ssz m = run_of(t, n, q + 1, F_ALNUM);
    if (m < 1 || m > 5 || !path_end_ok(t, n, q + 1 + m))
        return -1;
    return q + 1 + m;
}

/* (?:[^\s/\\"'`<>|;,:()\[\]{}*?]|\\ )+ as long as it goes */
static ssz useg_run_end(uch *t, ssz n, ssz p)
{
    while (p < n) {
        if (IS(t[p], F_USEG))
            p++;
        else if (t[p] == '\\' && p + 1 < n && t[p + 1] == ' ')
            p += 2;
        else
            break;
    }
    return p;
}

/* _SEGS at p: file name, else segments with spaces before a "/", else one segment */
static ssz unix_segs(uch *t, ssz n, ssz p)
{
    ssz e = file_name(t, n, p, F_UP1, F_UP2);
    if (e >= 0)
        return e;
    ssz q = useg_run_end(t, n, p);
    if (q == p)
        return -1;
    ssz r = q;
    while (CH(r, ' ')) {
        ssz z = useg_run_end(t, n, r + 1);
        if (z == r + 1)
            break;
        r = z;
    }
    return CH(r, '/') ? r : q;
}

static const char *UNIX_ROOTS[] = {
    "home", "root", "srv", "Users", "usr", "var", "etc", "tmp", "opt", "mnt", "media", "data", "proc", "sys", "dev",
    "run", "lib", "lib32", "lib64", "bin", "sbin", "boot", "snap", "nix", "private", "Volumes", "Applications",
    "Library", "System", "workspace", "workspaces", "builds", "scratch", "gpfs", "afs", "nfs", "net", "export",
    "storage", "app", "cygdrive", "lustre", NULL,
};
static ssz UNIX_ROOT_LEN[sizeof UNIX_ROOTS / sizeof UNIX_ROOTS[0]];

static void roots_init(void)
{
    for (int k = 0; UNIX_ROOTS[k]; k++)
        UNIX_ROOT_LEN[k] = (ssz)strlen(UNIX_ROOTS[k]);
}

static ssz m_unix_path(uch *t, ssz n, ssz s)
{
    if (s > 0 && IS(t[s - 1], F_PATHNB))
        return -1;
    ssz p;
    if (t[s] == '/') {
        /* a root is all letters and digits and must be followed by "/": only the whole word can be one */
        ssz len = run_of(t, n, s + 1, F_ALNUM);
        if (!CH(s + 1 + len, '/'))
            return -1;
        int found = 0;
        for (int k = 0; UNIX_ROOTS[k] && !found; k++)
            found = UNIX_ROOT_LEN[k] == len && UNIX_ROOTS[k][0] == t[s + 1] &&
                    memcmp(UNIX_ROOTS[k], t + s + 1, len) == 0;
        if (!found)
            return -1;
        p = s + 1 + len;
    } else {
        p = s + 1 + run_of(t, n, s + 1, F_TILDEU);
    }
    int iterations = 0;
    while (CH(p, '/')) {
        ssz q = p;
        while (CH(q, '/'))
            q++;
        ssz e = q < n ? unix_segs(t, n, q) : -1;
        if (e < 0)
            break;
        p = e;
        iterations++;
    }
    if (!iterations)
        return -1;
    return CH(p, '/') ? p + 1 : p;
}

static ssz win_segs(uch *t, ssz n, ssz p)
{
    ssz e = file_name(t, n, p, F_W1, F_W1);
    if (e >= 0)
        return e;
    ssz q = p + run_of(t, n, p, F_WSEG);
    if (q == p)
        return -1;
    ssz r = q;
    while (CH(r, ' ')) {
        ssz z = run_of(t, n, r + 1, F_WSEG);
        if (!z)
            break;
        r += 1 + z;
    }
    return (CH(r, '\\') || CH(r, '/')) ? r : q;
}

#define IS_SLASH(i) (CH((i), '\\') || CH((i), '/'))

static ssz m_windows_path(uch *t, ssz n, ssz s)
{
    if (s > 0 && (IS(t[s - 1], F_WORD) || t[s - 1] == '/' || t[s - 1] == '\\'))
        return -1;
    if (!IS(t[s], F_ALPHA) || !CH(s + 1, ':'))
        return -1;
    ssz p = s + 2, q = p;
    while (IS_SLASH(q))
        q++;
    if (q == p || q >= n)
        return -1;
    ssz e = win_segs(t, n, q);
    if (e < 0)
        return -1;
    p = e;
    for (;;) {
        q = p;
        while (IS_SLASH(q))
            q++;
        if (q == p || q >= n)
            break;
        e = win_segs(t, n, q);
        if (e < 0)
            break;
        p = e;
    }
    while (IS_SLASH(p))
        p++;
    return p;
}

static ssz unc_rest(uch *t, ssz n, ssz p)
{
    ssz q = p + run_of(t, n, p, F_UNCNAME);
    if (q == p)
        return -1;
    int iterations = 0;
    for (;;) {
        ssz r = q;
        while (CH(r, '\\'))
            r++;
        if (r == q || r >= n)
            break;
        ssz e = win_segs(t, n, r);
        if (e < 0)
            break;
        q = e;
        iterations++;
    }
    if (!iterations)
        return -1;
    while (CH(q, '\\'))
        q++;
    return q;
}

static ssz m_unc_path(uch *t, ssz n, ssz s)
{
    if (s > 0 && (IS(t[s - 1], F_WORD) || t[s - 1] == '\\'))
        return -1;
    ssz r = 0;
    while (CH(s + r, '\\'))
        r++;
    if (r < 2 || r > 4)
        return -1;
    ssz p = s + r;
    if ((CH(p, '?') || CH(p, '.')) && CH(p + 1, '\\')) {
        ssz q = p + 1;
        while (CH(q, '\\'))
            q++;
        ssz e = unc_rest(t, n, q);
        if (e >= 0)
            return e;
    }
    return unc_rest(t, n, p);
}

static ssz m_file_url(uch *t, ssz n, ssz s)
{
    if (s > 0 && IS(t[s - 1], F_WORD))
        return -1;
    if (s + 7 >= n || lower(t[s]) != 'f' || lower(t[s + 1]) != 'i' || lower(t[s + 2]) != 'l' ||
        lower(t[s + 3]) != 'e' || memcmp(t + s + 4, "://", 3) != 0)
        return -1;
    ssz r = run_of(t, n, s + 7, F_FILEURL);
    return r ? s + 7 + r : -1;
}

/* _trim_trailing: trailing punctuation, then closing parentheses the span did not open */
static ssz trim_trailing(uch *t, ssz start, ssz end)
{
    while (end > start && IS(t[end - 1], F_TRIM))
        end--;
    ssz opened = 0, closed = 0;
    for (ssz i = start; i < end; i++) {
        opened += t[i] == '(';
        closed += t[i] == ')';
    }
    while (end > start && t[end - 1] == ')' && opened < closed) {
        end--;
        closed--;
    }
    return end;
}

/* [A-Za-z]{2,24}(?![\w-]) at p: the end, or -1 */
static inline ssz tld_end(uch *t, ssz n, ssz p)
{
    ssz len = run_of(t, n, p, F_ALPHA);
    if (len < 2 || len > 24 || AT(p + len, F_WORD) || CH(p + len, '-'))
        return -1;
    return p + len;
}

static ssz m_email(uch *t, ssz n, ssz s)
{
    ssz p = s + 1, best = -1;
    for (;;) {
        ssz len = run_of(t, n, p, F_LABEL);
        if (len < 1 || len > 63 || !IS(t[p], F_ALNUM) || !IS(t[p + len - 1], F_ALNUM) || !CH(p + len, '.'))
            break;
        p += len + 1;
        ssz e = tld_end(t, n, p);
        if (e >= 0)
            best = e;
    }
    return best;
}

static int accept_email(uch *t, ssz n, ssz at, ssz *start_out)
{
    ssz start = at;
    while (start > 0 && at - start < 64 && IS(t[start - 1], F_LOCAL))
        start--;
    if (start == at || t[start] == '.' || t[start] == '_' || t[start] == '%' || t[start] == '+' || t[start] == '-')
        return 0;
    if (start > 0 && IS(t[start - 1], F_LOCAL))
        return 0;
    /* _IMAGE_SCALE: @\d+(?:\.\d+)?x\. */
    ssz d = run_of(t, n, at + 1, F_DIGIT);
    if (d) {
        ssz q = at + 1 + d;
        if (CH(q, '.') && AT(q + 1, F_DIGIT))
            q += 1 + run_of(t, n, q + 1, F_DIGIT);
        if (CH(q, 'x') && CH(q + 1, '.'))
            return 0;
    }
    if (at - start == 3 && memcmp(t + start, "git", 3) == 0)
        return 0;
    *start_out = start;
    return 1;
}

static ssz m_handle(uch *t, ssz n, ssz s)
{
    if (s > 0 && IS(t[s - 1], F_HNOT))
        return -1;
    ssz p = s + 1;
    if (!AT(p, F_ALPHA))
        return -1;
    ssz r = 0;
    while (r <= 39 && AT(p + 1 + r, F_HNAME))
        r++;
    if (r > 39 || (r > 0 && t[p + r] == '-'))
        return -1;
    ssz e = p + 1 + r;
    if (e < n && (IS(t[e], F_HNLA) || (t[e] == '.' && (AT(e + 1, F_ALPHA) || CH(e + 1, '_')))))
        return -1;
    return e;
}

/* _CODE_AFTER: [ \t]*(?:\|\|=|[-+*\/]?=(?!=)|\[) */
static int code_after(uch *t, ssz n, ssz p)
{
    while (CH(p, ' ') || CH(p, '\t'))
        p++;
    if (p >= n)
        return 0;
    if (p + 2 < n && t[p] == '|' && t[p + 1] == '|' && t[p + 2] == '=')
        return 1;
    if (t[p] == '-' || t[p] == '+' || t[p] == '*' || t[p] == '/')
        return CH(p + 1, '=') && !CH(p + 2, '=');
    if (t[p] == '=')
        return !CH(p + 1, '=');
    return t[p] == '[';
}

/* _DECORATOR_LINE.match(text, pos, endpos): [ \t]*@[\w.]+[ \t]*$ */
static int decorator_line(uch *t, ssz pos, ssz endpos)
{
    ssz p = pos;
    while (p < endpos && (t[p] == ' ' || t[p] == '\t'))
        p++;
    if (p >= endpos || t[p] != '@')
        return 0;
    ssz q = ++p;
    while (q < endpos && (IS(t[q], F_WORD) || t[q] == '.'))
        q++;
    if (q == p)
        return 0;
    while (q < endpos && (t[q] == ' ' || t[q] == '\t'))
        q++;
    return q == endpos || (q == endpos - 1 && t[q] == '\n');
}

static const char *DEFINITION_WORDS[] = {
    "def", "class", "function", "fun", "func", "public", "private", "protected", "export", "static", NULL,
};

static int definition_word(uch *t, ssz n, ssz p)
{
    if (CH(p, '@'))
        return AT(p + 1, F_WORD);
    ssz len = run_of(t, n, p, F_WORD);
    for (const char **word = DEFINITION_WORDS; *word; word++)
        if ((ssz)strlen(*word) == len && memcmp(*word, t + p, len) == 0)
            return 1;
    return 0;
}

/* _DEFINITION_START.match(text, p): [ \t]*(?:async\s+)?(?:def|class|...|@)\b */
static int definition_start(uch *t, ssz n, ssz p)
{
    while (CH(p, ' ') || CH(p, '\t'))
        p++;
    if (p + 5 <= n && memcmp(t + p, "async", 5) == 0) {
        ssz q = p + 5 + run_of(t, n, p + 5, F_SPACE);
        if (q > p + 5 && definition_word(t, n, q))
            return 1;
    }
    return definition_word(t, n, p);
}

#define DECORATOR_LINE_MAX 256

static int accept_handle(uch *t, ssz n, ssz s, ssz e)
{
    if (e - (s + 1) < 2 || strset_has_lower(&cfg.code_at_words, t, s + 1, e) || code_after(t, n, e))
        return 0;
    ssz line_start = 0;
    for (ssz i = s - 1; i >= (s > DECORATOR_LINE_MAX ? s - DECORATOR_LINE_MAX : 0); i--) {
        if (t[i] == '\n') {
            line_start = i + 1;
            break;
        }
    }
    ssz line_end = -1, limit = e + DECORATOR_LINE_MAX < n ? e + DECORATOR_LINE_MAX : n;
    for (ssz i = e; i < limit; i++) {
        if (t[i] == '\n') {
            line_end = i;
            break;
        }
    }
    if ((line_start || s <= DECORATOR_LINE_MAX) && line_end >= 0 && decorator_line(t, line_start, line_end) &&
        definition_start(t, n, line_end + 1))
        return 0;
    return 1;
}

static ssz m_ipv4(uch *t, ssz n, ssz s)
{
    if (s > 0 && (IS(t[s - 1], F_WORD) || t[s - 1] == '.'))
        return -1;
    ssz p = s;
    for (int k = 0; k < 3; k++) {
        ssz d = run_of(t, n, p, F_DIGIT);
        if (d < 1 || d > 3 || !CH(p + d, '.'))
            return -1;
        p += d + 1;
    }
    ssz d = run_of(t, n, p, F_DIGIT);
    if (d < 1 || d > 3)
        return -1;
    p += d;
    if (p < n && (IS(t[p], F_WORD) || (t[p] == '.' && AT(p + 1, F_DIGIT))))
        return -1;
    return p;
}

static const char *VERSION_WORDS[] = {"version", "ver.", "ver", "release", "build", "rev.", "rev", "v", NULL};

/* _VERSION_BEFORE.search(text, lo, s): a version word, or "Product/", just before the quad */
static int version_before(uch *t, ssz n, ssz lo, ssz s)
{
    /* (?:\bversion|\bver\.?|\brelease|\bbuild|\brev\.?|\bv)\s*[:=]?\s*$ */
    for (ssz p = lo; p < s; p++) {
        if (!IS(t[p], F_ALPHA) || (p > 0 && IS(t[p - 1], F_WORD)))
            continue;
        for (const char **word = VERSION_WORDS; *word; word++) {
            ssz len = (ssz)strlen(*word), q = p;
            if (p + len > s)
                continue;
            int same = 1;
            for (ssz i = 0; i < len && same; i++)
                same = lower(t[p + i]) == (*word)[i];
            if (!same)
                continue;
            q = p + len;
            while (q < s && IS(t[q], F_SPACE))
                q++;
            if (q < s && (t[q] == ':' || t[q] == '='))
                q++;
            while (q < s && IS(t[q], F_SPACE))
                q++;
            if (q == s)
                return 1;
        }
    }
    /* \b[A-Za-z][\w-]*\/$, where $ is the end or a final newline */
    for (int newline = 0; newline < 2; newline++) {
        ssz x = s - newline;
        if (newline && !(s - 1 >= lo && t[s - 1] == '\n'))
            continue;
        if (x - 1 < lo || t[x - 1] != '/')
            continue;
        for (ssz p = x - 2; p >= lo; p--) {
            if (IS(t[p], F_ALPHA) && (p == 0 || !IS(t[p - 1], F_WORD)))
                return 1;
            if (!(IS(t[p], F_WORD) || t[p] == '-'))
                break;
        }
    }
    return 0;
}

static int accept_ipv4(uch *t, ssz n, ssz s, ssz e)
{
    int octets[4], k = 0;
    ssz p = s;
    while (k < 4) {
        ssz d = run_of(t, n, p, F_DIGIT);
        if (d > 1 && t[p] == '0')
            return 0;
        int value = 0;
        for (ssz i = 0; i < d; i++)
            value = value * 10 + (t[p + i] - '0');
        if (value > 255)
            return 0;
        octets[k++] = value;
        p += d + 1;
    }
    if (e - s == 7 || octets[0] == 127)
        return 0;
    if (octets[0] == 255) {
        uint32_t as_int = ((uint32_t)octets[0] << 24) | ((uint32_t)octets[1] << 16) | ((uint32_t)octets[2] << 8) |
                          (uint32_t)octets[3];
        if ((as_int | (as_int - 1)) == 0xFFFFFFFFu)
            return 0;
    }
    ssz lo = s > 16 ? s - 16 : 0;
    int hint = 0;
    for (ssz i = lo; i < s && !hint; i++) {
        int c = lower(t[i]);
        hint = c == 'v' || c == '/';
        if (!hint && c == 'r' && s - i >= 7) {
            hint = 1;
            for (int j = 0; j < 7 && hint; j++)
                hint = lower(t[i + j]) == "release"[j];
        }
        if (!hint && c == 'b' && s - i >= 5) {
            hint = 1;
            for (int j = 0; j < 5 && hint; j++)
                hint = lower(t[i + j]) == "build"[j];
        }
    }
    return !(hint && version_before(t, n, lo, s));
}

static ssz m_ipv6(uch *t, ssz n, ssz s)
{
    if (s > 0 && (IS(t[s - 1], F_WORD) || t[s - 1] == ':' || t[s - 1] == '.' || t[s - 1] == '%'))
        return -1;
    ssz p = s;
    int k = 0;
    while (k < 7) {
        ssz h = run_of(t, n, p, F_HEX);
        if (h > 4 || !CH(p + h, ':'))
            break;
        p += h + 1;
        k++;
    }
    if (k < 2)
        return -1;
    /* (?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})? */
    ssz q = p;
    int quad = 1;
    for (int j = 0; j < 3 && quad; j++) {
        ssz d = run_of(t, n, q, F_DIGIT);
        if (d < 1 || d > 3 || !CH(q + d, '.'))
            quad = 0;
        else
            q += d + 1;
    }
    if (quad && AT(q, F_DIGIT)) {
        ssz d = run_of(t, n, q, F_DIGIT);
        p = q + (d > 3 ? 3 : d);
    } else {
        ssz h = run_of(t, n, p, F_HEX);
        p += h > 4 ? 4 : h;
    }
    if (CH(p, '%') && AT(p + 1, F_ZONE))
        p += 1 + run_of(t, n, p + 1, F_ZONE);
    return p;
}

/* ipaddress.IPv6Address(text[s:e]) without the IPv4 forms: 1 valid, 0 invalid, -1 decline (a dotted tail) */
static int parse_ipv6(uch *t, ssz s, ssz e, uint16_t hextets[8], ssz *zone)
{
    ssz addr_end = e;
    *zone = -1;
    for (ssz i = s; i < e; i++) {
        if (t[i] == '%') {
            addr_end = i;
            *zone = i;
            break;
        }
    }
    if (*zone >= 0) {
        if (*zone + 1 >= e)
            return 0;
        for (ssz i = *zone + 1; i < e; i++)
            if (t[i] == '%')
                return 0;
    }
    if (addr_end == s)
        return 0;
    ssz starts[16], ends[16];
    int parts = 0;
    ssz begin = s;
    for (ssz i = s; i <= addr_end; i++) {
        if (i == addr_end || t[i] == ':') {
            if (parts >= 16)
                return 0;
            starts[parts] = begin;
            ends[parts] = i;
            parts++;
            begin = i + 1;
        }
    }
    if (parts < 3)
        return 0;
    for (ssz i = starts[parts - 1]; i < ends[parts - 1]; i++)
        if (t[i] == '.')
            return -1;
    if (parts > 9)
        return 0;
    int skip = -1;
    for (int i = 1; i < parts - 1; i++) {
        if (starts[i] == ends[i]) {
            if (skip >= 0)
                return 0;
            skip = i;
        }
    }
    int hi, lo, skipped;
    if (skip >= 0) {
        hi = skip;
        lo = parts - skip - 1;
        if (starts[0] == ends[0] && --hi)
            return 0;
        if (starts[parts - 1] == ends[parts - 1] && --lo)
            return 0;
        skipped = 8 - (hi + lo);
        if (skipped < 1)
            return 0;
    } else {
        if (parts != 8 || starts[0] == ends[0] || starts[parts - 1] == ends[parts - 1])
            return 0;
        hi = parts;
        lo = 0;
        skipped = 0;
    }
    int out = 0;
    for (int i = 0; i < hi + lo; i++) {
        int part = i < hi ? i : parts - lo + (i - hi);
        ssz len = ends[part] - starts[part];
        if (len < 1 || len > 4)
            return 0;
        unsigned value = 0;
        for (ssz j = starts[part]; j < ends[part]; j++) {
            int c = t[j];
            if (!IS(c, F_HEX))
                return 0;
            value = value * 16 + (unsigned)(c <= '9' ? c - '0' : lower(c) - 'a' + 10);
        }
        if (i == hi)
            for (int z = 0; z < skipped; z++)
                hextets[out++] = 0;
        hextets[out++] = (uint16_t)value;
    }
    if (lo == 0)
        for (int z = 0; z < skipped; z++)
            hextets[out++] = 0;
    return 1;
}

/* _accept_ipv6: 1 accept (with *end), 0 reject, -1 decline */
static int accept_ipv6(uch *t, ssz n, ssz s, ssz e, ssz *end_out)
{
    if (e < n && (IS(t[e], F_ALNUM) || t[e] == '_'))
        return 0;
    ssz end = e;
    while (end > s) {
        int digit = 0;
        for (ssz i = s; i < end && t[i] != '%' && !digit; i++)
            digit = IS(t[i], F_DIGIT) != 0;
        if (digit && end - s >= 3) {
            uint16_t h[8];
            ssz zone;
            int ok = parse_ipv6(t, s, end, h, &zone);
            if (ok < 0)
                return -1;
            if (ok) {
                int zero6 = !h[0] && !h[1] && !h[2] && !h[3] && !h[4];
                if (zero6 && h[5] == 0xFFFF)
                    return -1; /* IPv4-mapped */
                if (zero6 && !h[5] && !h[6] && h[7] <= 1)
                    return 0; /* loopback, unspecified */
                *end_out = end;
                return 1;
            }
        }
        if (t[end - 1] != ':')
            return 0;
        end--;
    }
    return 0;
}

static ssz m_mac(uch *t, ssz n, ssz s)
{
    if (s > 0 && (IS(t[s - 1], F_WORD) || t[s - 1] == ':' || t[s - 1] == '.' || t[s - 1] == '-'))
        return -1;
#define HEX2(i) (AT((i), F_HEX) && AT((i) + 1, F_HEX))
#define HEX4(i) (HEX2(i) && HEX2((i) + 2))
#define MAC_NLA(p) (!((p) < n && (IS(t[(p)], F_WORD) || t[(p)] == ':' || t[(p)] == '-' || \
                                  (t[(p)] == '.' && AT((p) + 1, F_WORD)))))
    if (HEX2(s) && (CH(s + 2, ':') || CH(s + 2, '-')) && HEX2(s + 3)) {
        int sep = t[s + 2], ok = 1;
        for (int k = 0; k < 4 && ok; k++)
            ok = CH(s + 5 + 3 * k, sep) && HEX2(s + 6 + 3 * k);
        if (ok && MAC_NLA(s + 17))
            return s + 17;
    }
    if (HEX4(s) && CH(s + 4, '.') && HEX4(s + 5) && CH(s + 9, '.') && HEX4(s + 10) && MAC_NLA(s + 14))
        return s + 14;
    return -1;
}

/* (?![\w]|[.-]\d) */
static inline int number_end(uch *t, ssz n, ssz p)
{
    if (p >= n)
        return 1;
    if (IS(t[p], F_WORD))
        return 0;
    return !((t[p] == '.' || t[p] == '-') && AT(p + 1, F_DIGIT));
}

/* (?:[ -]\d{1,8}|\.\d{1,4}){1,6} then (?![\w]|[.-]\d) */
static ssz intl_groups(uch *t, ssz n, ssz p)
{
    ssz ends[6];
    int m = 0;
    while (m < 6) {
        if (CH(p, ' ') || CH(p, '-')) {
            ssz d = run_of(t, n, p + 1, F_DIGIT);
            if (d < 1 || d > 8)
                break;
            p += 1 + d;
        } else if (CH(p, '.')) {
            ssz d = run_of(t, n, p + 1, F_DIGIT);
            if (d < 1 || d > 4)
                break;
            p += 1 + d;
        } else {
            break;
        }
        ends[m++] = p;
    }
    for (int j = m - 1; j >= 0; j--)
        if (number_end(t, n, ends[j]))
            return ends[j];
    return -1;
}

static ssz m_phone_intl(uch *t, ssz n, ssz s)
{
    if (s > 0 && (IS(t[s - 1], F_WORD) || t[s - 1] == '+'))
        return -1;
    ssz p = s + 1, d = run_of(t, n, p, F_DIGIT);
    if (d >= 1 && d <= 3) {
        ssz q = p + d, r = q;
        if (CH(r, ' ') || CH(r, '.') || CH(r, '-'))
            r++;
        if (CH(r, '(')) {
            ssz d2 = run_of(t, n, r + 1, F_DIGIT);
            if (d2 >= 1 && d2 <= 4 && CH(r + 1 + d2, ')')) {
                ssz e = intl_groups(t, n, r + 2 + d2);
                if (e >= 0)
                    return e;
            }
        }
        ssz e = intl_groups(t, n, q);
        if (e >= 0)
            return e;
    }
    if (d >= 8 && d <= 15 && number_end(t, n, p + d))
        return p + d;
    return -1;
}

#define SEP3(i) (CH((i), ' ') || CH((i), '.') || CH((i), '-'))
#define D29(i) ((i) < n && t[(i)] >= '2' && t[(i)] <= '9')

static ssz nanp_rest(uch *t, ssz n, ssz p)
{
    if (D29(p) && AT(p + 1, F_DIGIT) && AT(p + 2, F_DIGIT) && SEP3(p + 3) && AT(p + 4, F_DIGIT) &&
        AT(p + 5, F_DIGIT) && AT(p + 6, F_DIGIT) && AT(p + 7, F_DIGIT) && number_end(t, n, p + 8))
        return p + 8;
    return -1;
}

static ssz nanp_area(uch *t, ssz n, ssz p)
{
    if (CH(p, '(') && D29(p + 1) && AT(p + 2, F_DIGIT) && AT(p + 3, F_DIGIT) && CH(p + 4, ')')) {
        ssz e;
        if (SEP3(p + 5) && (e = nanp_rest(t, n, p + 6)) >= 0)
            return e;
        if ((e = nanp_rest(t, n, p + 5)) >= 0)
            return e;
    }
    if (D29(p) && AT(p + 1, F_DIGIT) && AT(p + 2, F_DIGIT) && SEP3(p + 3))
        return nanp_rest(t, n, p + 4);
    return -1;
}

static ssz m_phone_nanp(uch *t, ssz n, ssz s)
{
    if (s > 0 && (IS(t[s - 1], F_WORD) || t[s - 1] == '+' || t[s - 1] == '.' || t[s - 1] == '-'))
        return -1;
    if (CH(s, '1') && SEP3(s + 1)) {
        ssz e = nanp_area(t, n, s + 2);
        if (e >= 0)
            return e;
    }
    return nanp_area(t, n, s);
}

static ssz national_last(uch *t, ssz n, ssz q)
{
    ssz r = run_of(t, n, q, F_DIGIT);
    for (ssz b = r > 4 ? 4 : r; b >= 3; b--)
        if (number_end(t, n, q + b))
            return q + b;
    return -1;
}

static ssz m_phone_national(uch *t, ssz n, ssz s)
{
    if (s > 0 && (IS(t[s - 1], F_WORD) || t[s - 1] == '+' || t[s - 1] == '.' || t[s - 1] == '-'))
        return -1;
    if (t[s] != '0')
        return -1;
    ssz d = run_of(t, n, s + 1, F_DIGIT);
    if (d >= 1 && d <= 4 && (CH(s + 1 + d, ' ') || CH(s + 1 + d, '-'))) {
        ssz p = s + 2 + d, r = run_of(t, n, p, F_DIGIT);
        for (ssz a = r > 4 ? 4 : r; a >= 3; a--) {
            ssz q = p + a, e;
            if ((CH(q, ' ') || CH(q, '-')) && (e = national_last(t, n, q + 1)) >= 0)
                return e;
            if ((e = national_last(t, n, q)) >= 0)
                return e;
        }
    }
    /* 0\d(?:[ .]\d{2}){4} */
    if (AT(s + 1, F_DIGIT)) {
        ssz p = s + 2;
        int ok = 1;
        for (int k = 0; k < 4 && ok; k++, p += 3)
            ok = (CH(p, ' ') || CH(p, '.')) && AT(p + 1, F_DIGIT) && AT(p + 2, F_DIGIT);
        if (ok && number_end(t, n, p))
            return p;
    }
    return -1;
}

static inline int digits_at(uch *t, ssz n, ssz p, int count)
{
    for (int i = 0; i < count; i++)
        if (!AT(p + i, F_DIGIT))
            return 0;
    return 1;
}

static ssz m_ssn(uch *t, ssz n, ssz s)
{
    if (s > 0 && (IS(t[s - 1], F_WORD) || t[s - 1] == '-'))
        return -1;
    if (!digits_at(t, n, s, 3) || !CH(s + 3, '-') || !digits_at(t, n, s + 4, 2) || !CH(s + 6, '-') ||
        !digits_at(t, n, s + 7, 4))
        return -1;
    if (!memcmp(t + s, "000", 3) || !memcmp(t + s, "666", 3) || t[s] == '9' || !memcmp(t + s + 4, "00", 2) ||
        !memcmp(t + s + 7, "0000", 4))
        return -1;
    if (s + 11 < n && (IS(t[s + 11], F_WORD) || t[s + 11] == '-'))
        return -1;
    return s + 11;
}

static ssz m_card(uch *t, ssz n, ssz s)
{
    if (s > 0 && (IS(t[s - 1], F_WORD) || t[s - 1] == '.' || t[s - 1] == '-'))
        return -1;
    if (!digits_at(t, n, s, 4))
        return -1;
    /* \d{4}([ -]?)\d{4}\1\d{4}\1\d{1,7} */
    ssz p = s + 4, sep = (CH(p, ' ') || CH(p, '-')) ? 1 : 0;
    int sc = sep ? t[p] : 0;
    if (digits_at(t, n, p + sep, 4) && (!sep || CH(p + sep + 4, sc)) && digits_at(t, n, p + 2 * sep + 4, 4) &&
        (!sep || CH(p + 2 * sep + 8, sc))) {
        ssz q = p + 3 * sep + 8, r = run_of(t, n, q, F_DIGIT);
        if (r >= 1 && r <= 7 && number_end(t, n, q + r))
            return q + r;
    }
    /* \d{4}[ -]?\d{6}[ -]?\d{4,5} */
    p = s + 4;
    if (CH(p, ' ') || CH(p, '-'))
        p++;
    if (digits_at(t, n, p, 6)) {
        p += 6;
        if (CH(p, ' ') || CH(p, '-'))
            p++;
        ssz r = run_of(t, n, p, F_DIGIT);
        if ((r == 4 || r == 5) && number_end(t, n, p + r))
            return p + r;
    }
    ssz r = run_of(t, n, s, F_DIGIT);
    if (r >= 13 && r <= 19 && number_end(t, n, s + r))
        return s + r;
    return -1;
}

/* _CARD_IIN.match on the digits */
static int card_iin(const char *d)
{
#define P(s) (strncmp(d, s, strlen(s)) == 0)
#define IN(i, a, b) (d[i] >= a && d[i] <= b)
    if (d[0] == '4')
        return 1;
    if (d[0] == '5' && IN(1, '1', '5'))
        return 1;
    if (d[0] == '2' && ((d[1] == '2' && d[2] == '2' && IN(3, '1', '9')) || (d[1] == '2' && IN(2, '3', '9')) ||
                        IN(1, '3', '6') || (d[1] == '7' && IN(2, '0', '1')) || P("2720")))
        return 1;
    if (d[0] == '3' && (d[1] == '4' || d[1] == '7'))
        return 1;
    if (d[0] == '6' && (P("6011") || d[1] == '5' || (d[1] == '4' && IN(2, '4', '9')) || d[1] == '2'))
        return 1;
    if (P("35") && ((d[2] == '2' && IN(3, '8', '9')) || IN(2, '3', '8')))
        return 1;
    if (d[0] == '3' && ((d[1] == '0' && IN(2, '0', '5')) || d[1] == '6' || d[1] == '8' || d[1] == '9'))
        return 1;
    if (P("5018") || P("5020") || P("5038") || P("5893") || P("6304") || P("6759") || (P("676") && IN(3, '1', '3')))
        return 1;
    return 0;
#undef P
#undef IN
}

static int accept_card(uch *t, ssz s, ssz e)
{
    char d[24];
    int len = 0;
    for (ssz i = s; i < e; i++) {
        if (t[i] == ' ' || t[i] == '-')
            continue;
        if (len >= 20)
            return 0;
        d[len++] = (char)t[i];
    }
    d[len] = 0;
    if (len < 13 || len > 19 || !card_iin(d))
        return 0;
    int total = 0;
    for (int i = 0; i < len; i++) {
        int digit = d[len - 1 - i] - '0';
        if (i % 2) {
            digit *= 2;
            if (digit > 9)
                digit -= 9;
        }
        total += digit;
    }
    return total % 10 == 0;
}

static ssz iban_tail(uch *t, ssz n, ssz p)
{
    ssz q = CH(p, ' ') ? p + 1 : p, r = run_of(t, n, q, F_AZ09);
    if (r >= 1 && r <= 3 && !AT(q + r, F_WORD))
        return q + r;
    return AT(p, F_WORD) ? -1 : p;
}

static ssz m_iban(uch *t, ssz n, ssz s)
{
    if (s > 0 && IS(t[s - 1], F_WORD))
        return -1;
    if (!AT(s, F_UPPER) || !AT(s + 1, F_UPPER) || !AT(s + 2, F_DIGIT) || !AT(s + 3, F_DIGIT))
        return -1;
    ssz groups[8], p = s + 4;
    int m = 0;
    while (m < 7) {
        ssz q = CH(p, ' ') ? p + 1 : p;
        if (!(AT(q, F_AZ09) && AT(q + 1, F_AZ09) && AT(q + 2, F_AZ09) && AT(q + 3, F_AZ09)))
            break;
        p = q + 4;
        groups[m++] = p;
    }
    for (int j = m; j >= 2; j--) {
        ssz e = iban_tail(t, n, groups[j - 1]);
        if (e >= 0)
            return e;
    }
    return -1;
}

static int accept_iban(uch *t, ssz s, ssz e)
{
    char c[40];
    int len = 0;
    for (ssz i = s; i < e; i++) {
        if (t[i] == ' ')
            continue;
        if (len >= 39)
            return 0;
        c[len++] = (char)t[i];
    }
    if (len < 4 || cfg.iban_length[c[0] - 'A'][c[1] - 'A'] != len)
        return 0;
    unsigned remainder = 0;
    for (int k = 0; k < len; k++) {
        char ch = c[(k + 4) % len];
        if (ch >= '0' && ch <= '9')
            remainder = (remainder * 10 + (unsigned)(ch - '0')) % 97;
        else
            remainder = (remainder * 100 + (unsigned)(ch - 'A' + 10)) % 97;
    }
    return remainder == 1;
}

static ssz m_env_braced(uch *t, ssz n, ssz s)
{
    if (!CH(s + 1, '{') || !(AT(s + 2, F_ALPHA) || CH(s + 2, '_')))
        return -1;
    ssz r = run_of(t, n, s + 2, F_WORD);
    if (r > 128)
        return -1;
    ssz p = s + 2 + r;
    if (CH(p, ':') || CH(p, '?') || CH(p, '+') || CH(p, '=') || CH(p, '-')) {
        ssz q = p + 1;
        while (q < n && q - (p + 1) <= 256 && t[q] != '}' && t[q] != '\n')
            q++;
        return (q - (p + 1) <= 256 && CH(q, '}')) ? q + 1 : -1;
    }
    return CH(p, '}') ? p + 1 : -1;
}

static ssz m_env_powershell(uch *t, ssz n, ssz s)
{
    if (s > 0 && (IS(t[s - 1], F_WORD) || t[s - 1] == '$'))
        return -1;
    if (s + 5 >= n || lower(t[s + 1]) != 'e' || lower(t[s + 2]) != 'n' || lower(t[s + 3]) != 'v' ||
        t[s + 4] != ':' || !(IS(t[s + 5], F_ALPHA) || t[s + 5] == '_'))
        return -1;
    return s + 6 + run_of(t, n, s + 6, F_WORD);
}

static ssz m_env_unix(uch *t, ssz n, ssz s)
{
    if (s > 0 && (IS(t[s - 1], F_WORD) || t[s - 1] == '$' || t[s - 1] == '\\'))
        return -1;
    if (!(AT(s + 1, F_UPPER) || CH(s + 1, '_')))
        return -1;
    ssz r = run_of(t, n, s + 2, F_ENVU);
    if (r < 1 || AT(s + 2 + r, F_WORD) || CH(s + 2 + r, '$'))
        return -1;
    return s + 2 + r;
}

static ssz m_env_windows(uch *t, ssz n, ssz s)
{
    if (s > 0 && (IS(t[s - 1], F_WORD) || t[s - 1] == '%'))
        return -1;
    if (!(AT(s + 1, F_ALPHA) || CH(s + 1, '_')))
        return -1;
    ssz p = s + 2 + run_of(t, n, s + 2, F_WORD);
    if (CH(p, '(')) {
        ssz r = run_of(t, n, p + 1, F_ALNUM);
        if (!r || !CH(p + 1 + r, ')'))
            return -1;
        p += r + 2;
    }
    if (!CH(p, '%') || AT(p + 1, F_WORD) || CH(p + 1, '%'))
        return -1;
    return p + 1;
}

static int accept_env_windows(uch *t, ssz n, ssz s)
{
    ssz p = s + 1, q = p + run_of(t, n, p, F_WORD);
    if (q - p < 2)
        return 0;
    int cased = 0, lowered = 0;
    for (ssz i = p; i < q; i++) {
        cased |= IS(t[i], F_ALPHA) != 0;
        lowered |= t[i] >= 'a' && t[i] <= 'z';
    }
    return (cased && !lowered) || strset_has_lower(&cfg.windows_env_names, t, p, q);
}

/* --- the engine: every ported rule in one pass, finditer semantics per rule -------------------------------------- */

typedef struct {
    ssz start, end;
    int rule;
} cand;

typedef struct {
    cand *items;
    ssz len, cap;
    cand local[32];
} cands;

static int cands_push(cands *c, ssz start, ssz end, int rule)
{
    if (c->len == c->cap) {
        ssz cap = c->cap * 2;
        cand *grown = c->items == c->local ? malloc(cap * sizeof(cand)) : realloc(c->items, cap * sizeof(cand));
        if (!grown)
            return -1;
        if (c->items == c->local)
            memcpy(grown, c->local, c->len * sizeof(cand));
        c->items = grown;
        c->cap = cap;
    }
    c->items[c->len].start = start;
    c->items[c->len].end = end;
    c->items[c->len].rule = rule;
    c->len++;
    return 0;
}

static void cands_init(cands *c)
{
    c->items = c->local;
    c->len = 0;
    c->cap = 32;
}

static void cands_free(cands *c)
{
    if (c->items != c->local)
        free(c->items);
}

static int accept(uch *t, ssz n, int rule, ssz s, ssz e, cands *out);

/* Could _URL_CREDENTIALS match anywhere? Its pattern, exactly (not its accept function):
 * ://(?<=[A-Za-z0-9+.-]://)(?P<v>[^\s/?#@:"'<>]+:[^\s/?#@"'<>]*)@(?=[^\s/?#@"'<>]) */
static int url_credentials_possible(uch *t, ssz n)
{
    for (ssz i = 1; i + 3 < n; i++) {
        if (t[i] != ':' || t[i + 1] != '/' || t[i + 2] != '/')
            continue;
        if (!(IS(t[i - 1], F_ALNUM) || t[i - 1] == '+' || t[i - 1] == '.' || t[i - 1] == '-'))
            continue;
        ssz p = i + 3, r = 0;
        while (p + r < n && IS(t[p + r], F_USERINFO) && t[p + r] != ':')
            r++;
        if (!r || !CH(p + r, ':'))
            continue;
        p += r + 1;
        p += run_of(t, n, p, F_USERINFO);
        if (CH(p, '@') && AT(p + 1, F_USERINFO))
            return 1;
    }
    return 0;
}

/* Could a rule that is not ported match? The pre-filter's conditions, checked conservatively. */
static int must_decline(uch *t, ssz n)
{
    unsigned char found[MAX_DECLINE_RULES];
    int any = 0;
    for (ssz i = 0; i + 1 < n; i++) {
        unsigned pair = (unsigned)t[i] * 128 + t[i + 1];
        if (!(cfg.bigram_bits[pair >> 6] >> (pair & 63) & 1))
            continue;
        for (int k = cfg.bigram[pair]; k >= 0; k = cfg.nodes[k].next) {
            const literal *lit = &cfg.literals[cfg.nodes[k].literal];
            if (i + lit->len > n || (any && found[lit->rule]))
                continue;
            int same = 1;
            for (int j = 2; j < lit->len && same; j++)
                same = (lit->caseless ? lower(t[i + j]) : t[i + j]) == (unsigned char)lit->text[j];
            if (same) {
                if (!any) {
                    memset(found, 0, sizeof found);
                    any = 1;
                }
                found[lit->rule] = 1;
            }
        }
    }
    if (any) {
        int gate = -1, colon_or_equals = -1, dash_word = -1; /* computed when first needed */
        for (int r = 0; r < cfg.n_decline; r++) {
            if (!found[r])
                continue;
            if (cfg.decline_gated[r]) {
                if (gate < 0) {
                    ssz run = 0;
                    gate = 0;
                    for (ssz i = 0; i < n && !gate; i++)
                        gate = (run = IS(t[i], F_HNAME) ? run + 1 : 0) >= 16;
                }
                if (!gate)
                    continue;
            }
            if (cfg.decline_quick[r] == 1) {
                if (colon_or_equals < 0)
                    colon_or_equals = memchr(t, ':', n) != NULL || memchr(t, '=', n) != NULL;
                if (!colon_or_equals)
                    continue;
            }
            if (cfg.decline_quick[r] == 2) {
                if (dash_word < 0) {
                    dash_word = 0;
                    for (ssz i = 0; i + 1 < n && !dash_word; i++)
                        dash_word = t[i] == '-' && (IS(t[i + 1], F_ALPHA) || t[i + 1] == '-');
                }
                if (!dash_word)
                    continue;
            }
            return 1;
        }
    }
    return memchr(t, ':', n) != NULL && url_credentials_possible(t, n);
}

/* 0: the candidates are all the ported rules find; 1: declined; -1: out of memory */
static int find_candidates(uch *t, ssz n, cands *out)
{
    if (must_decline(t, n))
        return 1;
    ssz next[N_RULES];
    for (int r = 0; r < N_RULES; r++)
        next[r] = 0;

#define TRY(rule, call)                                                                                               \
    if (i >= next[rule]) {                                                                                            \
        ssz e = (call);                                                                                               \
        if (e >= 0) {                                                                                                 \
            next[rule] = e;                                                                                           \
            int verdict = accept(t, n, rule, i, e, out);                                                              \
            if (verdict)                                                                                              \
                return verdict;                                                                                       \
        }                                                                                                             \
    }
    int after_word = 0; /* is t[i - 1] a word character? */
    for (ssz i = 0; i < n; i++) {
        int c = t[i];
        if (IS(c, F_WORD)) {
            if (after_word)
                continue;
            after_word = 1;
            /* a word start: the rules below all need one */
            if (IS(c, F_DIGIT)) {
                /* each matcher is called only where its pattern's first characters can be: d digits, then c2 */
                ssz d = run_of(t, n, i, F_DIGIT), h = d + run_of(t, n, i + d, F_HEX);
                int c2 = i + d < n ? t[i + d] : -1, sep = c2 == ' ' || c2 == '-' || c2 == '.';
                if (d >= 4)
                    TRY(R_CARD, m_card(t, n, i));
                if (d == 3 && c2 == '-')
                    TRY(R_SSN, m_ssn(t, n, i));
                if (d <= 3 && c2 == '.')
                    TRY(R_IPV4, m_ipv4(t, n, i));
                if (h <= 4 && CH(i + h, ':'))
                    TRY(R_IPV6, m_ipv6(t, n, i));
                if ((h == 2 && (CH(i + 2, ':') || CH(i + 2, '-'))) || (h == 4 && CH(i + 4, '.')))
                    TRY(R_MAC, m_mac(t, n, i));
                if ((d == 3 || (d == 1 && c == '1')) && sep)
                    TRY(R_PHONE_NANP, m_phone_nanp(t, n, i));
                if (c == '0' && d >= 2 && d <= 5 && sep)
                    TRY(R_PHONE_NATIONAL, m_phone_national(t, n, i));
            } else if (c != '_') {
                if (c == 'f' || c == 'F')
                    TRY(R_FILE_URL, m_file_url(t, n, i));
                if (i + 1 < n && t[i + 1] == ':')
                    TRY(R_WINDOWS, m_windows_path(t, n, i));
                if (IS(c, F_UPPER))
                    TRY(R_IBAN, m_iban(t, n, i));
                if (IS(c, F_HEX)) {
                    /* both need a ":", "-" or "." within five characters */
                    ssz h = run_of(t, n, i, F_HEX);
                    if (h <= 4 && i + h < n && (t[i + h] == ':' || t[i + h] == '-' || t[i + h] == '.')) {
                        TRY(R_IPV6, m_ipv6(t, n, i));
                        TRY(R_MAC, m_mac(t, n, i));
                    }
                }
            }
            continue;
        }
        after_word = 0;
        switch (c) {
        case '/':
        case '~':
            TRY(R_UNIX, m_unix_path(t, n, i));
            break;
        case '\\':
            TRY(R_UNC, m_unc_path(t, n, i));
            break;
        case '@':
            TRY(R_EMAIL, m_email(t, n, i));
            TRY(R_HANDLE, m_handle(t, n, i));
            break;
        case '+':
            TRY(R_PHONE_INTL, m_phone_intl(t, n, i));
            break;
        case '$':
            TRY(R_ENV_BRACED, m_env_braced(t, n, i));
            TRY(R_ENV_POWERSHELL, m_env_powershell(t, n, i));
            TRY(R_ENV_UNIX, m_env_unix(t, n, i));
            break;
        case '%':
            TRY(R_ENV_WINDOWS, m_env_windows(t, n, i));
            break;
        case ':':
            TRY(R_IPV6, m_ipv6(t, n, i));
            break;
        case '(':
            TRY(R_PHONE_NANP, m_phone_nanp(t, n, i));
            break;
        default:
            break;
        }
    }
#undef TRY
    return 0;
}

/* the rule's accept function; pushes the candidate it keeps. 0 go on, 1 decline, -1 out of memory */
static int accept(uch *t, ssz n, int rule, ssz s, ssz e, cands *out)
{
    ssz start = s, end = e;
    switch (rule) {
    case R_FILE_URL:
    case R_UNC:
    case R_WINDOWS:
    case R_UNIX:
        end = trim_trailing(t, s, e);
        break;
    case R_EMAIL:
        if (!accept_email(t, n, s, &start))
            return 0;
        break;
    case R_HANDLE:
        if (!accept_handle(t, n, s, e))
            return 0;
        break;
    case R_IPV4:
        if (!accept_ipv4(t, n, s, e))
            return 0;
        break;
    case R_IPV6: {
        int verdict = accept_ipv6(t, n, s, e, &end);
        if (verdict < 0)
            return 1;
        if (!verdict)
            return 0;
        break;
    }
    case R_CARD:
        if (!accept_card(t, s, e))
            return 0;
        break;
    case R_IBAN:
        if (!accept_iban(t, s, e))
            return 0;
        break;
    case R_PHONE_INTL:
    case R_PHONE_NANP:
    case R_PHONE_NATIONAL: {
        int digits = 0;
        for (ssz i = s; i < e; i++)
            digits += IS(t[i], F_DIGIT) != 0;
        if (digits < 7 || digits > 15)
            return 0;
        break;
    }
    case R_ENV_WINDOWS:
        if (!accept_env_windows(t, n, s))
            return 0;
        break;
    default:
        break;
    }
    if (end <= start)
        return 0;
    return cands_push(out, start, end, rule) < 0 ? -1 : 0;
}

/* --- PiiStripper._resolve ----------------------------------------------------------------------------------------- */

static int by_start(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return cfg.order[x->rule] - cfg.order[y->rule];
}

static int by_precedence(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    ssz lx = x->end - x->start, ly = y->end - y->start;
    if (lx != ly)
        return lx > ly ? -1 : 1;
    if (cfg.order[x->rule] != cfg.order[y->rule])
        return cfg.order[x->rule] - cfg.order[y->rule];
    return x->start < y->start ? -1 : (x->start > y->start);
}

/* winners in text order, in place: no secrets here, so the longest span wins, then the earliest rule */
static void sort_cands(cand *items, ssz len, int (*cmp)(const void *, const void *))
{
    if (len > 16) {
        qsort(items, len, sizeof(cand), cmp);
        return;
    }
    for (ssz i = 1; i < len; i++) { /* insertion sort: the usual handful of findings */
        cand x = items[i];
        ssz j = i;
        while (j > 0 && cmp(&items[j - 1], &x) > 0) {
            items[j] = items[j - 1];
            j--;
        }
        items[j] = x;
    }
}

static int resolve(cands *c)
{
    if (c->len < 2)
        return 0;
    sort_cands(c->items, c->len, by_start);
    int overlap = 0;
    for (ssz i = 0; i + 1 < c->len && !overlap; i++)
        overlap = c->items[i].end > c->items[i + 1].start;
    if (!overlap)
        return 0;
    cand *order = malloc(c->len * sizeof(cand));
    if (!order)
        return -1;
    memcpy(order, c->items, c->len * sizeof(cand));
    sort_cands(order, c->len, by_precedence);
    ssz chosen = 0;
    for (ssz k = 0; k < c->len; k++) {
        cand x = order[k];
        ssz lo = 0, hi = chosen; /* bisect_right on starts */
        while (lo < hi) {
            ssz mid = (lo + hi) / 2;
            if (x.start < c->items[mid].start)
                hi = mid;
            else
                lo = mid + 1;
        }
        if ((lo && c->items[lo - 1].end > x.start) || (lo < chosen && c->items[lo].start < x.end))
            continue;
        memmove(c->items + lo + 1, c->items + lo, (chosen - lo) * sizeof(cand));
        c->items[lo] = x;
        chosen++;
    }
    c->len = chosen;
    free(order);
    return 0;
}

/* --- pseudonyms --------------------------------------------------------------------------------------------------- */

/* _normalize(category, value) into buf (room for the value + 64); returns its length */
static ssz normalize(uch *t, const cand *x, char *buf)
{
    ssz len = 0;
    switch (RULE_KIND[x->rule]) {
    case K_EMAIL:
        for (ssz i = x->start; i < x->end; i++)
            buf[len++] = (char)lower(t[i]);
        return len;
    case K_PHONE:
    case K_CARD:
    case K_IBAN:
    case K_ID:
        for (ssz i = x->start; i < x->end; i++)
            if (IS(t[i], F_ALNUM))
                buf[len++] = (char)(t[i] >= 'a' && t[i] <= 'z' ? t[i] - 32 : t[i]);
        return len;
    case K_MAC:
        for (ssz i = x->start; i < x->end; i++)
            if (IS(t[i], F_ALNUM))
                buf[len++] = (char)lower(t[i]);
        return len;
    case K_IP:
        if (x->rule == R_IPV6) { /* ipaddress.ip_address(value).compressed */
            uint16_t h[8];
            ssz zone;
            parse_ipv6(t, x->start, x->end, h, &zone);
            int best = -1, best_len = 0, run = -1, run_len = 0;
            for (int i = 0; i < 8; i++) {
                if (h[i] == 0) {
                    if (run < 0)
                        run = i;
                    if (++run_len > best_len) {
                        best_len = run_len;
                        best = run;
                    }
                } else {
                    run = -1;
                    run_len = 0;
                }
            }
            if (best_len < 2)
                best = -1;
            for (int i = 0; i < 8; i++) {
                if (i == best) {
                    buf[len++] = ':';
                    if (i == 0)
                        buf[len++] = ':';
                    i += best_len - 1;
                    continue;
                }
                len += sprintf(buf + len, "%x", h[i]);
                if (i < 7)
                    buf[len++] = ':';
            }
            if (zone >= 0)
                for (ssz i = zone; i < x->end; i++)
                    buf[len++] = (char)t[i];
            return len;
        }
        /* fall through: an accepted IPv4 is already canonical */
    default:
        memcpy(buf, t + x->start, x->end - x->start);
        return x->end - x->start;
    }
}

/* "<LABEL_number>"; numbers 1..PSEUDONYM_CACHE are made once */
static PyObject *pseudonym(int kind, long number)
{
    int cached = number >= 1 && number <= PSEUDONYM_CACHE;
    if (cached && cfg.cache[kind][number]) {
        Py_INCREF(cfg.cache[kind][number]);
        return cfg.cache[kind][number];
    }
    PyObject *made = PyUnicode_FromFormat("<%U_%ld>", cfg.labels[kind], number);
    if (made && cached) {
        PyUnicode_InternInPlace(&made);
        Py_INCREF(made);
        cfg.cache[kind][number] = made;
    }
    return made;
}

/* a fresh table (scan): values are compared as their normalized bytes, found through a hash index (a text can hold
 * 10^5 distinct values: a linear search per finding made scan quadratic) */
typedef struct {
    int kind;
    ssz offset, len; /* into the arena */
    long number;
    uint64_t hash;
} entry;

#define TABLE_SLOTS_LOCAL 32

typedef struct {
    char *arena;
    ssz arena_len, arena_cap;
    entry *entries;
    ssz count, cap;
    ssz *slots; /* open addressing: an entry's index + 1, 0 where empty; at most half full */
    size_t mask;
    long next[N_KINDS];
    char arena_local[1024];
    entry entries_local[16];
    ssz slots_local[TABLE_SLOTS_LOCAL];
} table;

static void table_init(table *tb)
{
    tb->arena = tb->arena_local;
    tb->arena_len = 0;
    tb->arena_cap = sizeof tb->arena_local;
    tb->entries = tb->entries_local;
    tb->count = 0;
    tb->cap = 16;
    tb->slots = tb->slots_local;
    tb->mask = TABLE_SLOTS_LOCAL - 1;
    memset(tb->slots_local, 0, sizeof tb->slots_local);
    memset(tb->next, 0, sizeof tb->next);
}

static void table_free(table *tb)
{
    if (tb->arena != tb->arena_local)
        free(tb->arena);
    if (tb->entries != tb->entries_local)
        free(tb->entries);
    if (tb->slots != tb->slots_local)
        free(tb->slots);
}

/* doubles the index; 0, or -1 out of memory */
static int table_grow_slots(table *tb)
{
    size_t size = (tb->mask + 1) * 2;
    ssz *slots = calloc(size, sizeof(ssz));
    if (!slots)
        return -1;
    for (ssz i = 0; i < tb->count; i++) {
        size_t slot = tb->entries[i].hash & (size - 1);
        while (slots[slot])
            slot = (slot + 1) & (size - 1);
        slots[slot] = i + 1;
    }
    if (tb->slots != tb->slots_local)
        free(tb->slots);
    tb->slots = slots;
    tb->mask = size - 1;
    return 0;
}

static PyObject *table_get(table *tb, uch *t, const cand *x)
{
    int kind = RULE_KIND[x->rule];
    ssz room = x->end - x->start + 64;
    if (tb->arena_len + room > tb->arena_cap) {
        ssz cap = (tb->arena_cap + room) * 2;
        char *grown = tb->arena == tb->arena_local ? malloc(cap) : realloc(tb->arena, cap);
        if (!grown)
            return PyErr_NoMemory();
        if (tb->arena == tb->arena_local)
            memcpy(grown, tb->arena_local, tb->arena_len);
        tb->arena = grown;
        tb->arena_cap = cap;
    }
    char *value = tb->arena + tb->arena_len;
    ssz len = normalize(t, x, value);
    uint64_t hash = fnv(value, (size_t)len) ^ ((uint64_t)kind * 0x9E3779B97F4A7C15ULL);
    size_t slot = hash & tb->mask;
    for (; tb->slots[slot]; slot = (slot + 1) & tb->mask) {
        entry *e = &tb->entries[tb->slots[slot] - 1];
        if (e->hash == hash && e->kind == kind && e->len == len && memcmp(tb->arena + e->offset, value, len) == 0)
            return pseudonym(kind, e->number);
    }
    if (tb->count == tb->cap) {
        ssz cap = tb->cap * 2;
        entry *grown = tb->entries == tb->entries_local ? malloc(cap * sizeof(entry))
                                                        : realloc(tb->entries, cap * sizeof(entry));
        if (!grown)
            return PyErr_NoMemory();
        if (tb->entries == tb->entries_local)
            memcpy(grown, tb->entries_local, tb->count * sizeof(entry));
        tb->entries = grown;
        tb->cap = cap;
    }
    entry *e = &tb->entries[tb->count++];
    e->kind = kind;
    e->offset = tb->arena_len;
    e->len = len;
    e->number = ++tb->next[kind];
    e->hash = hash;
    tb->slots[slot] = tb->count;
    tb->arena_len += len;
    if ((size_t)tb->count * 2 > tb->mask + 1 && table_grow_slots(tb) < 0)
        return PyErr_NoMemory();
    return pseudonym(kind, e->number);
}

/* an ASCII str: what the redacted text can be built from byte by byte */
static int is_ascii_str(PyObject *obj)
{
    if (!PyUnicode_Check(obj))
        return 0;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(obj) < 0) {
        PyErr_Clear();
        return 0;
    }
#endif
    return PyUnicode_IS_ASCII(obj);
}

/* _Pseudonyms.get on the dicts of a Python _Pseudonyms (shared with the Python engine within one export). NULL with
 * *declined set where the dicts hold what this function does not handle as _Pseudonyms.get would (a pseudonym that is
 * not an ASCII str, a counter that is not an int of C long range): pii.py's engine then takes the text, and finds in
 * the dicts what this call already added, as it would have added it. */
static PyObject *dict_get(PyObject *by_value, PyObject *next, uch *t, const cand *x, char *buf, int *declined)
{
    int kind = RULE_KIND[x->rule];
    ssz len = normalize(t, x, buf);
    PyObject *value = PyUnicode_FromStringAndSize(buf, len);
    if (!value)
        return NULL;
    PyObject *key = PyTuple_Pack(2, cfg.labels[kind], value);
    Py_DECREF(value);
    if (!key)
        return NULL;
    PyObject *found = PyDict_GetItemWithError(by_value, key);
    if (found) {
        Py_DECREF(key);
        if (!is_ascii_str(found)) {
            *declined = 1;
            return NULL;
        }
        Py_INCREF(found);
        return found;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    long number = 1;
    PyObject *current = PyDict_GetItemWithError(next, cfg.labels[kind]);
    if (current) {
        int overflow = 0;
        long last = PyLong_CheckExact(current) ? PyLong_AsLongAndOverflow(current, &overflow) : LONG_MAX;
        if (last == -1 && PyErr_Occurred()) {
            Py_DECREF(key);
            return NULL;
        }
        if (overflow || last == LONG_MAX) { /* not an int, or last + 1 is not a C long */
            Py_DECREF(key);
            *declined = 1;
            return NULL;
        }
        number = last + 1;
    } else if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    PyObject *count = PyLong_FromLong(number);
    PyObject *made = count ? pseudonym(kind, number) : NULL;
    int failed = !made || PyDict_SetItem(next, cfg.labels[kind], count) < 0 || PyDict_SetItem(by_value, key, made) < 0;
    Py_XDECREF(count);
    Py_DECREF(key);
    if (failed) {
        Py_XDECREF(made);
        return NULL;
    }
    return made;
}

static PyObject *make_finding(const cand *x, PyObject *replacement)
{
    PyObject *start = PyLong_FromSsize_t(x->start), *end = start ? PyLong_FromSsize_t(x->end) : NULL;
    if (!end) {
        Py_XDECREF(start);
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)cfg.finding_type;
    PyObject *finding = type->tp_alloc(type, 5);
    if (!finding) {
        Py_DECREF(start);
        Py_DECREF(end);
        return NULL;
    }
    PyObject *name = cfg.names[x->rule], *category = cfg.categories[RULE_KIND[x->rule]];
    Py_INCREF(name);
    Py_INCREF(category);
    Py_INCREF(replacement);
    PyTuple_SET_ITEM(finding, 0, name);
    PyTuple_SET_ITEM(finding, 1, category);
    PyTuple_SET_ITEM(finding, 2, start);
    PyTuple_SET_ITEM(finding, 3, end);
    PyTuple_SET_ITEM(finding, 4, replacement);
    return finding;
}

/* --- the module's functions --------------------------------------------------------------------------------------- */

/* the text's bytes, or NULL (declined: not a str, not ASCII, or not set up) */
static uch *ascii_of(PyObject *text, ssz *n)
{
    if (!cfg.ready || !PyUnicode_Check(text))
        return NULL;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) {
        PyErr_Clear();
        return NULL;
    }
#endif
    if (!PyUnicode_IS_ASCII(text))
        return NULL;
    *n = PyUnicode_GET_LENGTH(text);
    return PyUnicode_1BYTE_DATA(text);
}

/* 0 found (winners resolved if resolve_them), 1 declined, -1 error */
static int run(uch *t, ssz n, cands *c, int resolve_them)
{
    int verdict = find_candidates(t, n, c);
    if (verdict < 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (verdict)
        return 1;
    if (resolve_them && resolve(c) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(scan_doc, "scan(text) -> list[PiiFinding] | None\n\n"
                       "PiiStripper.scan with a fresh pseudonym table; None when the text is declined.");

static PyObject *native_scan(PyObject *module, PyObject *text)
{
    ssz n;
    uch *t = ascii_of(text, &n);
    if (!t)
        Py_RETURN_NONE;
    cands c;
    cands_init(&c);
    int verdict = run(t, n, &c, 1);
    if (verdict) {
        cands_free(&c);
        if (verdict < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *list = PyList_New(c.len);
    table tb;
    table_init(&tb);
    for (ssz i = 0; list && i < c.len; i++) {
        PyObject *replacement = table_get(&tb, t, &c.items[i]);
        PyObject *finding = replacement ? make_finding(&c.items[i], replacement) : NULL;
        Py_XDECREF(replacement);
        if (!finding)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, finding);
    }
    table_free(&tb);
    cands_free(&c);
    return list;
}

PyDoc_STRVAR(redact_doc, "redact(text, by_value, next) -> (str, list[PiiFinding]) | None\n\n"
                         "PiiStripper._redact with the dicts of a _Pseudonyms; None when the text is declined, or\n"
                         "when the dicts hold a pseudonym that is not an ASCII str or a count that is not an int\n"
                         "below 2**63 - 1 (pii.py's engine then takes the text).");

static PyObject *native_redact(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyDict_Check(args[1]) || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "redact(text, by_value: dict, next: dict)");
        return NULL;
    }
    PyObject *text = args[0];
    ssz n;
    uch *t = ascii_of(text, &n);
    if (!t)
        Py_RETURN_NONE;
    cands c;
    cands_init(&c);
    int verdict = run(t, n, &c, 1);
    if (verdict) {
        cands_free(&c);
        if (verdict < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *findings = PyList_New(c.len), *result = NULL;
    int declined = 0;
    PyObject **replacements = c.len ? calloc(c.len, sizeof(PyObject *)) : NULL;
    ssz longest = 0, out_len = n;
    for (ssz i = 0; i < c.len; i++)
        if (c.items[i].end - c.items[i].start > longest)
            longest = c.items[i].end - c.items[i].start;
    char *buf = c.len ? malloc(longest + 64) : NULL;
    if (!findings || (c.len && (!replacements || !buf))) {
        if (findings)
            PyErr_NoMemory();
        goto done;
    }
    for (ssz i = 0; i < c.len; i++) {
        replacements[i] = dict_get(args[1], args[2], t, &c.items[i], buf, &declined);
        if (declined) {
            result = Py_None;
            Py_INCREF(result);
        }
        if (!replacements[i])
            goto done;
        PyObject *finding = make_finding(&c.items[i], replacements[i]);
        if (!finding)
            goto done;
        PyList_SET_ITEM(findings, i, finding);
        out_len += PyUnicode_GET_LENGTH(replacements[i]) - (c.items[i].end - c.items[i].start);
    }
    PyObject *redacted;
    if (!c.len) {
        redacted = text;
        Py_INCREF(redacted);
    } else {
        redacted = PyUnicode_New(out_len, 127);
        if (!redacted)
            goto done;
        Py_UCS1 *w = PyUnicode_1BYTE_DATA(redacted);
        ssz cursor = 0;
        for (ssz i = 0; i < c.len; i++) {
            memcpy(w, t + cursor, c.items[i].start - cursor);
            w += c.items[i].start - cursor;
            ssz len = PyUnicode_GET_LENGTH(replacements[i]);
            memcpy(w, PyUnicode_1BYTE_DATA(replacements[i]), len);
            w += len;
            cursor = c.items[i].end;
        }
        memcpy(w, t + cursor, n - cursor);
    }
    result = PyTuple_Pack(2, redacted, findings);
    Py_DECREF(redacted);
done:
    if (replacements)
        for (ssz i = 0; i < c.len; i++)
            Py_XDECREF(replacements[i]);
    free(replacements);
    free(buf);
    Py_XDECREF(findings);
    cands_free(&c);
    return result;
}

PyDoc_STRVAR(hits_doc, "hits(text) -> list[str] | None\n\n"
                       "The rule names of every candidate (PiiStripper._candidates, unresolved); None when declined.");

static PyObject *native_hits(PyObject *module, PyObject *text)
{
    ssz n;
    uch *t = ascii_of(text, &n);
    if (!t)
        Py_RETURN_NONE;
    cands c;
    cands_init(&c);
    int verdict = run(t, n, &c, 0);
    if (verdict) {
        cands_free(&c);
        if (verdict < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *list = PyList_New(c.len);
    for (ssz i = 0; list && i < c.len; i++) {
        Py_INCREF(cfg.names[c.items[i].rule]);
        PyList_SET_ITEM(list, i, cfg.names[c.items[i].rule]);
    }
    cands_free(&c);
    return list;
}

static void clear_config(void)
{
    cfg.ready = 0;
    Py_CLEAR(cfg.finding_type);
    for (int r = 0; r < N_RULES; r++)
        Py_CLEAR(cfg.names[r]);
    for (int k = 0; k < N_KINDS; k++) {
        Py_CLEAR(cfg.categories[k]);
        Py_CLEAR(cfg.labels[k]);
        for (int i = 0; i <= PSEUDONYM_CACHE; i++)
            Py_CLEAR(cfg.cache[k][i]);
    }
    strset_free(&cfg.code_at_words);
    strset_free(&cfg.windows_env_names);
}

static int add_literal(const char *text, Py_ssize_t len, int caseless, int rule)
{
    if (len < 2 || len >= (Py_ssize_t)sizeof(cfg.literals[0].text) || cfg.n_literals >= MAX_LITERALS) {
        PyErr_SetString(PyExc_ValueError, "a decline literal must have 2 to 47 ASCII characters");
        return -1;
    }
    literal *lit = &cfg.literals[cfg.n_literals];
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= 128) {
            PyErr_SetString(PyExc_ValueError, "decline literals are ASCII");
            return -1;
        }
        lit->text[i] = (char)(caseless ? lower(c) : c);
    }
    lit->len = (int)len;
    lit->caseless = caseless;
    lit->rule = rule;
    /* listed under every spelling of its first two characters that it matches */
    for (int a = 0; a < 128; a++) {
        if ((caseless ? lower(a) : a) != (unsigned char)lit->text[0])
            continue;
        for (int b = 0; b < 128; b++) {
            if ((caseless ? lower(b) : b) != (unsigned char)lit->text[1])
                continue;
            if (cfg.n_nodes >= MAX_NODES) {
                PyErr_SetString(PyExc_ValueError, "too many decline literals");
                return -1;
            }
            cfg.nodes[cfg.n_nodes].literal = (int16_t)cfg.n_literals;
            cfg.nodes[cfg.n_nodes].next = cfg.bigram[a * 128 + b];
            cfg.bigram[a * 128 + b] = (int16_t)cfg.n_nodes++;
            cfg.bigram_bits[(a * 128 + b) >> 6] |= 1ULL << ((a * 128 + b) & 63);
        }
    }
    cfg.n_literals++;
    return 0;
}

PyDoc_STRVAR(setup_doc,
             "setup(finding_type, orders, labels, code_at_words, windows_env_names, iban_lengths, decline)\n\n"
             "Called once by privacy.pii: the PiiFinding type, {rule name: order in the built-in rules} for RULES,\n"
             "{category: pseudonym label}, the word lists, the IBAN lengths, and per rule not ported a tuple\n"
             "(literals, caseless, gated, quick) whose hit declines a text (quick: 0 none, 1 [:=], 2 -[A-Za-z-]).");

static PyObject *native_setup(PyObject *module, PyObject *args)
{
    PyObject *finding_type, *orders, *labels, *code_at_words, *windows_env_names, *iban_lengths, *decline;
    if (!PyArg_ParseTuple(args, "O!O!O!OOO!O:setup", &PyType_Type, &finding_type, &PyDict_Type, &orders, &PyDict_Type,
                          &labels, &code_at_words, &windows_env_names, &PyDict_Type, &iban_lengths, &decline))
        return NULL;
    clear_config();
    if (!PyType_IsSubtype((PyTypeObject *)finding_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "finding_type must be a tuple subclass");
        return NULL;
    }
    Py_INCREF(finding_type);
    cfg.finding_type = finding_type;
    for (int r = 0; r < N_RULES; r++) {
        PyObject *key = PyUnicode_FromString(RULE_NAMES[r]);
        if (!key)
            goto fail;
        PyObject *order = PyDict_GetItemWithError(orders, key);
        if (!order) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_KeyError, "no order for rule %U", key);
            Py_DECREF(key);
            goto fail;
        }
        cfg.order[r] = (int)PyLong_AsLong(order);
        PyUnicode_InternInPlace(&key);
        cfg.names[r] = key;
        if (cfg.order[r] == -1 && PyErr_Occurred())
            goto fail;
    }
    for (int k = 0; k < N_KINDS; k++) {
        PyObject *category = PyUnicode_FromString(KIND_CATEGORIES[k]);
        if (!category)
            goto fail;
        PyUnicode_InternInPlace(&category);
        cfg.categories[k] = category;
        PyObject *label = PyDict_GetItemWithError(labels, category);
        if (!label || !PyUnicode_Check(label) || !PyUnicode_IS_ASCII(label)) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "no ASCII label for category %U", category);
            goto fail;
        }
        Py_INCREF(label);
        cfg.labels[k] = label;
    }
    if (strset_fill(&cfg.code_at_words, code_at_words) < 0 ||
        strset_fill(&cfg.windows_env_names, windows_env_names) < 0)
        goto fail;
    memset(cfg.iban_length, 0, sizeof cfg.iban_length);
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(iban_lengths, &pos, &key, &value)) {
        Py_ssize_t len;
        const char *code = PyUnicode_Check(key) ? PyUnicode_AsUTF8AndSize(key, &len) : NULL;
        long length = PyLong_AsLong(value);
        if (!code || len != 2 || code[0] < 'A' || code[0] > 'Z' || code[1] < 'A' || code[1] > 'Z' || length < 5 ||
            length > 34) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "IBAN lengths: {\"CC\": 5..34}");
            goto fail;
        }
        cfg.iban_length[code[0] - 'A'][code[1] - 'A'] = (unsigned char)length;
    }
    for (int i = 0; i < 128 * 128; i++)
        cfg.bigram[i] = -1;
    memset(cfg.bigram_bits, 0, sizeof cfg.bigram_bits);
    cfg.n_literals = cfg.n_nodes = cfg.n_decline = 0;
    PyObject *rules = PySequence_Fast(decline, "decline must be a sequence");
    if (!rules)
        goto fail;
    if (PySequence_Fast_GET_SIZE(rules) > MAX_DECLINE_RULES) {
        Py_DECREF(rules);
        PyErr_SetString(PyExc_ValueError, "too many rules to decline");
        goto fail;
    }
    for (Py_ssize_t r = 0; r < PySequence_Fast_GET_SIZE(rules); r++) {
        PyObject *literals;
        int caseless, gated, quick;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(rules, r), "O!ppi", &PyTuple_Type, &literals, &caseless,
                              &gated, &quick) ||
            quick < 0 || quick > 2) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "quick must be 0, 1 or 2");
            Py_DECREF(rules);
            goto fail;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(literals); i++) {
            Py_ssize_t len;
            const char *text = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(literals, i), &len);
            if (!text || add_literal(text, len, caseless, (int)r) < 0) {
                Py_DECREF(rules);
                goto fail;
            }
        }
        cfg.decline_gated[r] = gated;
        cfg.decline_quick[r] = quick;
        cfg.n_decline = (int)r + 1;
    }
    Py_DECREF(rules);
    cfg.ready = 1;
    Py_RETURN_NONE;
fail:
    clear_config();
    return NULL;
}

static PyMethodDef methods[] = {
    {"setup", native_setup, METH_VARARGS, setup_doc},
    {"scan", native_scan, METH_O, scan_doc},
    {"redact", (PyCFunction)(void (*)(void))native_redact, METH_FASTCALL, redact_doc},
    {"hits", native_hits, METH_O, hits_doc},
    {NULL, NULL, 0, NULL},
};

static void module_free(void *module) { clear_config(); }

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "privacy._pii_native",
    "The built-in PII rules that ordinary text hits, in C (see privacy/_pii_native.c and privacy.pii).", -1, methods,
    NULL, NULL, NULL, module_free,
};

PyMODINIT_FUNC PyInit__pii_native(void)
{
    cls_init();
    roots_init();
    PyObject *module = PyModule_Create(&moduledef);
    if (!module)
        return NULL;
    PyObject *names = PyTuple_New(N_RULES);
    if (!names) {
        Py_DECREF(module);
        return NULL;
    }
    for (int r = 0; r < N_RULES; r++) {
        PyObject *name = PyUnicode_FromString(RULE_NAMES[r]);
        if (!name) {
            Py_DECREF(names);
            Py_DECREF(module);
            return NULL;
        }
        PyTuple_SET_ITEM(names, r, name);
    }
    if (PyModule_AddObject(module, "RULES", names) < 0) {
        Py_DECREF(names);
        Py_DECREF(module);
        return NULL;
    }
    PyObject *checked = Py_BuildValue("(s)", "url_credentials");
    if (!checked || PyModule_AddObject(module, "CHECKED", checked) < 0) {
        Py_XDECREF(checked);
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddStringConstant(module, "PORTED_SHA256", PORTED_SHA256) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
