/* list.h - an intrusive doubly linked list (the worker's list of client connections). */
#ifndef PROXY_LIST_H
#define PROXY_LIST_H

#include <stddef.h>

typedef struct list_node {
    struct list_node *prev, *next;
} list_node_t;

#define list_entry(node, type, member) ((type *)((char *)(node)-offsetof(type, member)))

static inline void list_init(list_node_t *head)
{
    head->prev = head->next = head;
}

static inline void list_push(list_node_t *head, list_node_t *node)
{
    node->next = head->next;
    node->prev = head;
    head->next->prev = node;
    head->next = node;
}

static inline void list_remove(list_node_t *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = node;
}

static inline int list_empty(const list_node_t *head)
{
    return head->next == head;
}

#endif
