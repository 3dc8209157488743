import type { ScenarioVocabulary } from '@liveupdate/sdk';

type ObjectKind = NonNullable<ScenarioVocabulary['objects']>[number];

/** A file kind with the fields a memfd has (size, fill, touched), plus `more`. */
export const fileKind = (type: string, more: Record<string, object> = {}): ObjectKind => ({
  type,
  required: ['size', 'fill'],
  properties: {
    size: { type: 'string', format: 'size' },
    fill: { type: 'string', enum: ['pattern', 'synthetic', 'zero'] },
    touched: { type: 'number', minimum: 0, maximum: 1 },
    ...more,
  },
});
