/* flame_tree.h - private to executor/flame_*.c: walking the stack multiset in order. */
#ifndef EXEC_FLAME_TREE_H
#define EXEC_FLAME_TREE_H

#include <stdint.h>

#include "flame.h"

/* Called once per stack; a non-zero return ends the walk and is returned. */
typedef int(flame_each_fn)(void *arg, const char *stack, uint64_t count);

/* Calls fn for every stack of self in strcmp order. Returns 0, fn's first non-zero return, or
 * -ENOMEM. */
int flame_each_sorted(const flame_t *self, flame_each_fn *fn, void *arg);

#endif
