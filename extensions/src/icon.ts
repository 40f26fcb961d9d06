import { LabIcon } from '@jupyterlab/ui-components';

/** Three steps of a pipeline: the panel's sidebar icon and the "Mark as step" button. */
export const nbmlopsIcon = new LabIcon({
  name: 'nbmlops:pipeline',
  svgstr: `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <rect x="1" y="9" width="6" height="6" rx="1.5"/>
    <rect x="17" y="2" width="6" height="6" rx="1.5"/>
    <rect x="17" y="16" width="6" height="6" rx="1.5"/>
    <path d="M7 11.2h3.2V5.2H17v1.6h-5.2v4.4H7zM7 12.8h3.2v6H17v-1.6h-5.2v-4.4H7z"/>
  </g>
</svg>`
});
